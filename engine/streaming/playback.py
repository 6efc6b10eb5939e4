"""A recording fed into a session as a microphone would deliver it: 20 ms pieces, each at its time
on the session clock (for `ihuman live --audio` and the latency harness)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.streaming.clock import Clock
from engine.streaming.session import Session

PIECE_SECONDS = 0.02  # what a microphone delivers at a time


async def play(
    session: Session,
    clock: Clock,
    audio: np.ndarray,
    on_push: Callable[[int, float], None] | None = None,
) -> None:
    """Push `audio` (float32 mono at the session's rate) on the real timeline from the session's
    start; on_push(end pts of the piece, when it was pushed) after each piece.

    Each piece is pushed at its own pts (its place in the recording): a piece that comes late,
    because the event loop was busy, is late, not moved. Pushed without pts, a piece more than
    `max_audio_lag_ms` behind the clock would be taken for a producer that paused and placed at
    the clock, and the rest of the recording would follow it that much later."""
    rate = session.timeline.rate
    piece = round(PIECE_SECONDS * rate)
    for start in range(0, len(audio), piece):
        await clock.sleep_until(session.t0 + start / rate)
        chunk = audio[start : start + piece]
        pts = session.push_audio(chunk, start)
        if on_push is not None:
            on_push(pts + len(chunk), clock.now())
