"""What a caller chooses for one live session."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.generation.stages import GenerationChoices


@dataclass(frozen=True)
class SessionOptions:
    target_delay_ms: float | None = None  # D; None = from the engine's measured stage times
    # steps and seed (the prompt is open_session's, and set_text's)
    generation: GenerationChoices = field(default_factory=GenerationChoices)
    vad: bool = True  # the model hears only what the VAD calls speech (noise never moves the mouth)
    vad_mode: int = 2  # WebRTC VAD aggressiveness 0..3
    vad_hangover_ms: int = 300  # speech continues this long after the last voiced 20 ms
    audio_grace_ms: float = 40.0  # a segment waits this long past its audio's due time for late packets
    jitter_ms: float = 60.0  # margin added to an automatic delay
    delay_safety: float = 1.5  # x the measured compute, in an automatic delay
    degrade: bool = True  # degrade quality when frames miss their due time
    # Audio pushed without pts this far behind the clock restarts at now; a live producer placed
    # by its own clock (push_live_audio) restarts when its least late piece of 2 s is this late.
    max_audio_lag_ms: float = 200.0
    max_audio_ahead_s: float = 120.0  # audio may be pushed at most this far ahead of the clock (TTS)
    # A stage call without a result after this long has stalled (a hung driver, a deadlock): the
    # session fails with that reason instead of showing fallback frames forever.
    stall_timeout_s: float = 30.0
