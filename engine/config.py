"""Configuration: frozen dataclasses and the named presets.

Every size the engine uses (latent grids, tokens per latent frame, audio
samples per video frame, audio tokens per latent frame, ...) is a property
derived here from a handful of base fields; no other module writes these
numbers as literals. The time base is docs/design.md's contract: 25 fps video,
16 kHz mono audio, a causal video autoencoder that downsamples space by 8 and
time by 4 (the first frame alone), and a DiT patch of 1x2x2 (the tiny preset: space by 4 and a
1x4x4 patch, the same 16-pixel tokens).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.exceptions import ConfigError

ContextAttention = Literal["full", "block_causal"]


@dataclass(frozen=True)
class TimeBase:
    """The clocks every stage keeps (docs/design.md, "Time base")."""

    fps: int = 25  # video frames per second
    sample_rate: int = 16_000  # engine audio: mono float32 samples per second
    vae_spatial_stride: int = 8  # pixels per latent cell along each image axis
    vae_temporal_stride: int = 4  # video frames per latent frame (after the first, which stands alone)

    def __post_init__(self) -> None:
        if self.sample_rate % self.fps:
            raise ConfigError(f"sample_rate {self.sample_rate} is not a whole number of samples per frame")

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame (640 at 16 kHz / 25 fps)."""
        return self.sample_rate // self.fps

    @property
    def frame_ms(self) -> float:
        """Duration of one video frame in milliseconds."""
        return 1000.0 / self.fps

    @property
    def latent_frame_ms(self) -> float:
        """Duration of one latent frame (after the first) in milliseconds."""
        return self.vae_temporal_stride * self.frame_ms

    def latent_frames_for(self, video_frames: int) -> int:
        """Latent frames of a clip of `1 + 4k` video frames (the first frame alone)."""
        if video_frames < 1 or (video_frames - 1) % self.vae_temporal_stride:
            raise ConfigError(f"a clip must have 1 + {self.vae_temporal_stride}k frames, got {video_frames}")
        return 1 + (video_frames - 1) // self.vae_temporal_stride


@dataclass(frozen=True)
class Resolution:
    """A pixel size; both sides are multiples of the VAE stride times the DiT patch."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class DiTConfig:
    """One diffusion transformer (used for both LR-A2V and the PG-Refiner)."""

    width: int  # hidden size of every token
    depth: int  # number of transformer blocks
    heads: int  # attention heads; head_dim = width // heads
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * width
    patch: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    rope_theta: float = 10_000.0  # base of the rotary position embedding frequencies
    norm_eps: float = 1e-6  # epsilon of every RMSNorm
    context_attention: ContextAttention = "block_causal"  # how clean context tokens attend (see layers.py)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if min(self.rope_split) < 2:
            raise ConfigError(f"head_dim {self.head_dim} is too small to split over (t, h, w) rotary axes")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Channels of each head given to the (t, h, w) rotary axes; each even.

        The spatial axes get a third each (rounded down to even), time the rest,
        as in the 3D RoPE of video DiTs such as Wan.
        """
        spatial = 2 * (self.head_dim // 6)
        return (self.head_dim - 2 * spatial, spatial, spatial)

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch
        return pt * ph * pw


@dataclass(frozen=True)
class TextConfig:
    """The small byte-level text encoder (text is optional everywhere)."""

    dim: int  # hidden size of the text tokens
    depth: int  # transformer blocks
    heads: int  # attention heads
    max_bytes: int  # longer UTF-8 prompts are cut to this many bytes

    @property
    def vocab_size(self) -> int:
        """256 byte values plus the beginning-of-text token."""
        return 256 + 1

    @property
    def bos_id(self) -> int:
        return 256


@dataclass(frozen=True)
class AudioConfig:
    """Audio features as the generators see them."""

    feature_dim: int  # size of one audio feature vector (one per video frame, from the audio encoder)
    left_context_frames: int  # video frames of past audio each latent frame also attends to
    lookahead_frames: int  # video frames of future audio each latent frame attends to (adds latency)
    mel_bins: int = 80  # log-mel channels of the audio front end
    mel_window: int = 400  # STFT window in samples (25 ms at 16 kHz)
    mel_hop: int = 160  # STFT hop in samples (10 ms); must divide the samples of one video frame
    encoder_width: int = 256  # channels of the causal conv audio encoder
    encoder_layers: int = 4  # causal conv layers after the per-video-frame downsampling


@dataclass(frozen=True)
class PoseConfig:
    """The pixel-level pose tensor P (docs/design.md: 7 body channels + 1 background-landmark channel)."""

    channels: int = 8  # channels of P
    stride: int = 4  # HR pixels per pose pixel along each axis (1 = full HR resolution)


@dataclass(frozen=True)
class SegmentConfig:
    """Rolling segments: what one generation step produces and what it is conditioned on."""

    new_latents: int = 2  # latent frames generated per segment (2 = 320 ms of video)
    motion_latents: int = 1  # clean LR latent frames carried over from the previous segment
    refiner_motion_latents: int = 0  # clean HR latent frames carried over for refiner continuity (0 = none)
    prefix_latents: int = 1  # reference prefix latent frames (one encoded image)
    # LR-A2V adds the reference and the last context latent to every new frame's tokens
    # (LRA2V.context_tokens). Off in bundles made before it, which then load as they were.
    lr_context_tokens: bool = False
    # How much of its own motion the next segment sees: the motion latents carried over are
    # still + motion_feedback x (generated - still). 1 is the method; below 1 an error the model
    # adds decays instead of compounding segment after segment (docs/demo.md measures the drift).
    motion_feedback: float = 1.0
    # The reference's own detail where a decoded frame has not moved from the decoder's still frame
    # of it (generation/detail.py): a change this large (0-1 scale) keeps the pixel as generated;
    # 0 turns it off, and the frames are the decoder's alone.
    detail_tolerance: float = 0.25
    # Each latent frame's video starts where the last one ended (generation/joins.py): no step
    # every 4 frames; a change is shown in full (stride - 1) / 2 frames later on average.
    smooth_joins: bool = True
    # The generator hears each frame's audio this many frames early: the joins show a change
    # (stride - 1) / 2 frames after the decoder, and this brings the mouth back to its voice. Every
    # segment then waits for as many more frames of audio (40 ms each of added latency). Sampling
    # only: training pairs each frame with its own audio, as the joins are sampling only too.
    audio_lead_frames: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.audio_lead_frames, int) or self.audio_lead_frames < 0:
            lead = self.audio_lead_frames
            raise ConfigError(f"segment.audio_lead_frames must be a whole number >= 0, got {lead}")
        if not 0 <= self.motion_feedback <= 1:
            raise ConfigError(f"segment.motion_feedback must be in [0, 1], got {self.motion_feedback}")
        if not 0 <= self.detail_tolerance <= 1:
            raise ConfigError(f"segment.detail_tolerance must be in [0, 1], got {self.detail_tolerance}")


LOSS_SPACES = ("velocity", "estimate")  # where the flow-matching error is measured


@dataclass(frozen=True)
class FlowTraining:
    """One generator's flow-matching training settings (FlowConfig.training)."""

    shift: float  # schedule shift of the drawn times
    loss_space: str  # LOSS_SPACES
    sampler_steps: int  # Euler steps of its sampler, whose times take sampler_share of the draws
    sampler_share: float


@dataclass(frozen=True)
class FlowConfig:
    """Flow matching: sampling schedule and guidance."""

    lr_steps: int = 4  # Euler steps of LR-A2V at inference
    refiner_steps: int = 1  # Euler steps of the refiner (1 once distilled)
    lr_time_shift: float = 3.0  # schedule shift (> 1 spends more steps near noise)
    refiner_time_shift: float = 3.0  # its one-step path starts at t = 0: train where it samples
    # Where each generator's training error is measured (LOSS_SPACES). "velocity" (Li & He's)
    # weights an estimate's error by 1 / (1 - t)^2, up to 400x near the data; "estimate" weights
    # every t alike. A refiner that samples one step is only ever asked for its estimate at t = 0,
    # where that weight is 1, so under "velocity" its rare late-t draws dominate the gradient of
    # what it is never asked (docs/demo.md measures both).
    lr_loss: str = "velocity"
    refiner_loss: str = "estimate"
    train_time_mean: float = 0.0  # logit-normal mean of the training flow time
    train_time_std: float = 1.0  # logit-normal std of the training flow time
    # Share of LR-A2V's training samples drawn at the times its sampler evaluates (the starts of
    # its lr_steps Euler steps) instead of the logit-normal. A one-step sampler only ever asks for
    # the estimate at t = 0, which the logit-normal almost never draws (docs/demo.md). The
    # refiner's share likewise; at t = 0 its input is pure noise, so training there is also what
    # teaches it to ignore the noise that is drawn anew for every latent frame (the flicker).
    lr_sampler_time_share: float = 0.0
    refiner_sampler_time_share: float = 0.0
    # Per-condition CFG scales, applied in this order (reference, then audio, then text).
    guidance_reference: float = 1.0
    guidance_audio: float = 1.0
    guidance_text: float = 1.0

    def training(self, generator: str) -> FlowTraining:
        """What one generator's training draws and measures: `generator` is "lr" or "refiner",
        the prefix of its fields here."""
        return FlowTraining(
            shift=getattr(self, f"{generator}_time_shift"),
            loss_space=getattr(self, f"{generator}_loss"),
            sampler_steps=getattr(self, f"{generator}_steps"),
            sampler_share=getattr(self, f"{generator}_sampler_time_share"),
        )

    def __post_init__(self) -> None:
        for name in ("lr_steps", "refiner_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"flow.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_sampler_time_share", "refiner_sampler_time_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"flow.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("lr_loss", "refiner_loss"):
            if getattr(self, name) not in LOSS_SPACES:
                raise ConfigError(f"flow.{name} must be one of {LOSS_SPACES}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DropoutConfig:
    """Multimodal condition dropout in training (it is what makes CFG possible)."""

    text: float = 0.1
    audio: float = 0.1
    reference: float = 0.2  # the reference prefix / first frame
    pose: float = 0.2  # refiner only
    lr: float = 0.2  # refiner only: the degraded LR latent


@dataclass(frozen=True)
class DegradationConfig:
    """`z_deglr = LPF(z_lr) + a_deg * eps` (docs/design.md); training samples the parameters."""

    blur_sigma_max: float = 1.5  # training: Gaussian low-pass sigma (latent cells) ~ U(0, max)
    noise_max: float = 0.3  # training: a_deg ~ U(0, max)
    inference_blur_sigma: float = 0.75  # inference: fixed low-pass sigma
    inference_noise: float = 0.1  # inference: fixed a_deg


@dataclass(frozen=True)
class VAEConfig:
    """The causal video autoencoder: one /2 stage per encoder entry (three: spatial /8), temporal /4
    with the first frame alone. Each resampling has a channel-matching shortcut (models/vae.py), so
    neighbouring channel counts must divide one another as `shortcut_pairs` lists."""

    encoder_channels: tuple[int, ...] = (32, 64, 128)  # channels after each /2 stage
    decoder_channels: tuple[int, ...] = (128, 64, 32)  # channels before each x2 stage

    def shortcut_pairs(self, latent_channels: int) -> list[tuple[int, int]]:
        """(from, to) channel counts of every shortcut of the autoencoder."""
        enc, dec = self.encoder_channels, self.decoder_channels
        pairs = [(4 * a, b) for a, b in zip((enc[0] // 2, *enc[:-1]), enc, strict=True)]
        pairs += [(enc[-1], latent_channels), (latent_channels, dec[0])]
        pairs += [(a, 4 * b) for a, b in zip((dec[0], *dec[:-1]), dec, strict=True)]
        return pairs


@dataclass(frozen=True)
class Config:
    """Everything that fixes shapes and behaviour of one engine build."""

    name: str
    lr: Resolution  # low-res video generated by LR-A2V
    hr: Resolution  # refined output video
    latent_channels: int  # channels of the video autoencoder's latent
    lr_a2v: DiTConfig
    refiner: DiTConfig
    text: TextConfig
    audio: AudioConfig
    time: TimeBase = field(default_factory=TimeBase)
    pose: PoseConfig = field(default_factory=PoseConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)

    def __post_init__(self) -> None:
        for label, dit in (("lr_a2v", self.lr_a2v), ("refiner", self.refiner)):
            pt, ph, pw = dit.patch
            if pt != 1:
                raise ConfigError(f"{label}: temporal patch must be 1 (one token row per latent frame)")
            for res_label, res in (("lr", self.lr), ("hr", self.hr)):
                step_h = self.time.vae_spatial_stride * ph
                step_w = self.time.vae_spatial_stride * pw
                if res.height % step_h or res.width % step_w:
                    raise ConfigError(
                        f"{res_label} resolution {res} must be a multiple of {step_w}x{step_h} "
                        f"(VAE stride x {label} patch)"
                    )
        stages = len(self.vae.encoder_channels)
        if self.time.vae_spatial_stride != 2**stages or len(self.vae.decoder_channels) != stages:
            raise ConfigError("the autoencoder needs one encoder and one decoder stage per halving")
        for a, b in self.vae.shortcut_pairs(self.latent_channels):
            if a % b and b % a:
                raise ConfigError(f"autoencoder: a shortcut from {a} to {b} channels (must divide)")
        if self.time.samples_per_frame % self.audio.mel_hop or self.audio.mel_window < self.audio.mel_hop:
            raise ConfigError(
                f"mel hop {self.audio.mel_hop} must divide {self.time.samples_per_frame} samples per frame "
                f"and not exceed the window {self.audio.mel_window}"
            )
        token_stride = self.time.vae_spatial_stride * self.refiner.patch[1]
        if token_stride % self.pose.stride:
            raise ConfigError(f"pose stride {self.pose.stride} must divide the refiner token stride")

    # ----- latent grids -------------------------------------------------------------------------
    def latent_grid(self, res: Resolution) -> tuple[int, int]:
        """(height, width) of the latent for a pixel resolution."""
        s = self.time.vae_spatial_stride
        return res.height // s, res.width // s

    @property
    def lr_latent_grid(self) -> tuple[int, int]:
        return self.latent_grid(self.lr)

    @property
    def hr_latent_grid(self) -> tuple[int, int]:
        return self.latent_grid(self.hr)

    def token_grid(self, res: Resolution, dit: DiTConfig) -> tuple[int, int]:
        """(height, width) of the token grid of one latent frame."""
        h, w = self.latent_grid(res)
        return h // dit.patch[1], w // dit.patch[2]

    @property
    def lr_tokens_per_latent(self) -> int:
        h, w = self.token_grid(self.lr, self.lr_a2v)
        return h * w

    @property
    def hr_tokens_per_latent(self) -> int:
        h, w = self.token_grid(self.hr, self.refiner)
        return h * w

    # ----- audio --------------------------------------------------------------------------------
    @property
    def audio_tokens_per_latent(self) -> int:
        """Audio feature vectors one latent frame attends to: its own frames plus both contexts."""
        a = self.audio
        return self.time.vae_temporal_stride + a.left_context_frames + a.lookahead_frames

    @property
    def audio_wait_frames(self) -> int:
        """Frames of audio after a segment's last frame that it waits for: its lookahead and lead."""
        return self.audio.lookahead_frames + self.segment.audio_lead_frames

    @property
    def mel_frames_per_video_frame(self) -> int:
        return self.time.samples_per_frame // self.audio.mel_hop

    @property
    def samples_per_latent(self) -> int:
        return self.time.samples_per_frame * self.time.vae_temporal_stride

    # ----- segments -----------------------------------------------------------------------------
    @property
    def lr_segment_latents(self) -> int:
        """Latent frames LR-A2V attends over in one segment: prefix + motion + new."""
        s = self.segment
        return s.prefix_latents + s.motion_latents + s.new_latents

    @property
    def hr_segment_latents(self) -> int:
        s = self.segment
        return s.prefix_latents + s.refiner_motion_latents + s.new_latents

    @property
    def lr_segment_tokens(self) -> int:
        return self.lr_segment_latents * self.lr_tokens_per_latent

    @property
    def hr_segment_tokens(self) -> int:
        return self.hr_segment_latents * self.hr_tokens_per_latent

    @property
    def segment_video_frames(self) -> int:
        """Video frames a segment adds (each new latent frame = one temporal stride)."""
        return self.segment.new_latents * self.time.vae_temporal_stride

    @property
    def pose_size(self) -> tuple[int, int]:
        """(height, width) of one frame of the pose tensor."""
        return self.hr.height // self.pose.stride, self.hr.width // self.pose.stride

    # ----- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a config from `to_dict()` output; unknown or missing fields are errors."""
        return _from_dict(cls, data, path="config")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{path}: unknown fields {sorted(unknown)}")
    hints = _NESTED.get(cls, {})
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in hints:
            kwargs[name] = _from_dict(hints[name], value, f"{path}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{path}: {err}") from err


_NESTED: dict[type, dict[str, type]] = {
    Config: {
        "lr": Resolution,
        "hr": Resolution,
        "lr_a2v": DiTConfig,
        "refiner": DiTConfig,
        "text": TextConfig,
        "audio": AudioConfig,
        "time": TimeBase,
        "pose": PoseConfig,
        "segment": SegmentConfig,
        "flow": FlowConfig,
        "dropout": DropoutConfig,
        "degradation": DegradationConfig,
        "vae": VAEConfig,
    }
}
