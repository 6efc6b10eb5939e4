"""The `ihuman train lr-a2v|hand-refl` tasks: LR-A2V on video-autoencoder latents (the refiner's
tasks are in refiners.py; what follows holds for both generators).

Both read the bundle's trained autoencoder (and, for LR-A2V, its audio
encoder; for the refiner, its pose head) frozen, and build training segments
exactly as the live engine meets them:

- the reference frame is encoded alone, then the window's frames follow it in
  groups of 4 — the same latent stream the engine's causal decoder is primed
  with (the prefix first), so the generated latents are decoded as they were
  encoded;
- LR-A2V segments carry `motion` clean latents before the `new` ones; for a
  share of segments (the start of a stream) they are the still history the
  engine starts from — the reference held still (stages.Reference); their
  audio windows have the left context and the lookahead the planner gives them;
- the refiner's pose tensor comes from the ground-truth keypoints or, for
  half of the batches, from the pose head on the LR frames — what it gets at
  inference — so it learns to use both (and to survive the head's errors).

No loss reads the mouth through a learned reader: LR-A2V's lip term compares decoded pixels
around the lips with the true frames (LRA2VTask.mouth_loss), so the mouth readers stay judges
that the training never optimises.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.audio.windows import latent_audio_windows
from engine.config import Config
from engine.data.dataset import WindowSpec
from engine.flow import sampling_times, velocity_from_estimate
from engine.models.hand_reward import HandEvaluator
from engine.models.text import tokenize
from engine.parts import Parts
from engine.pose import keypoints as kp
from engine.randomness import randn
from engine.training.steps import (
    LRA2VBatch,
    lr_a2v_step,
    lr_conditions,
)
from engine.training.task import Task
from engine.training.windows import clip_with_reference

STREAM_START_RATE = 0.15  # share of LR-A2V segments trained from the still history
# Motion latents come from real video in training but from the model's own output when it
# streams; its small errors then compound segment after segment into noise. Noise of up to this
# std (per sample, uniform) on the training motion latents teaches it to clean them instead.
MOTION_NOISE = 0.2
# The mouth is a few cells of the tiny LR latent grid (40 x 24): unweighted, the flow loss hardly
# sees whether it opens with the audio. Its cells weigh this much more (a Gaussian as wide as the
# eyes are apart).
MOUTH_LOSS_WEIGHT = 10.0
# The mouth is the part of the picture the audio decides, and a small share of every latent: a
# pixel term on the decoded lips (LRA2VTask.mouth_loss) asks for it directly. It compares pixels
# with the true frames, so it cannot be met by anything but the mouth (a lip loss that read the
# mouth with a frozen reader was met partly by swinging the whole frame's colour).
MOUTH_PIXEL_WEIGHT = 4.0
LIP_CROP_CELLS = 12  # side of the decoded latent window around the lips
LIP_CROP_MARGIN = 2  # cells at the window's edge left out of the pixel term (the decoder's padding)
EVAL_TIMES = (0.25, 0.5, 0.75)  # flow times of the held-out loss (fixed, so runs compare)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mouth_weight(points: Tensor, grid: tuple[int, int], width: int, height: int) -> Tensor:
    """[B, 1, 1, h, w] loss weights over the latent grid: 1 + MOUTH_LOSS_WEIGHT at the lips (their
    mean over the window's frames [B, T, K, 2]), falling off as a Gaussian as wide as the eyes are
    apart (never narrower than a cell), so the weighted area follows the face whatever the
    preset's pixels per latent cell."""
    h, w = grid
    pixels = kp.to_pixels(points, width, height)  # [B, T, K, 2]
    centre = pixels[:, :, kp.LIPS].mean((1, 2))  # [B, 2]
    eyes = (pixels[:, :, kp.index("face", "eye_l")] - pixels[:, :, kp.index("face", "eye_r")]).norm(dim=-1)
    sigma = eyes.mean(1).clamp_min(max(height / h, width / w))[:, None, None]  # [B, 1, 1] pixels
    cells = {"dtype": torch.float32, "device": points.device}
    ys = (torch.arange(h, **cells) + 0.5) * (height / h)  # cell centres in pixels
    xs = (torch.arange(w, **cells) + 0.5) * (width / w)
    dy, dx = ys[None, :, None] - centre[:, 1, None, None], xs[None, None, :] - centre[:, 0, None, None]
    d2 = dy**2 + dx**2
    return (1 + MOUTH_LOSS_WEIGHT * torch.exp(-d2 / (2 * sigma**2)))[:, None, None]


def window_spec(cls: type, config: Config, width: int, height: int) -> WindowSpec:
    """The window a generator task of class `cls` trains on, at width x height."""
    return WindowSpec(frames=cls.window_frames(config), width=width, height=height)


@dataclass
class LRA2VTask(Task):
    parts: Parts  # the trained autoencoder and audio encoder it reads (frozen)
    READS: ClassVar[tuple[str, ...]] = ("vae", "audio")  # those parts' names: its windows' store key

    def frozen(self) -> list[nn.Module]:
        return [getattr(self.parts, name) for name in self.READS]

    @staticmethod
    def window_frames(config: Config) -> int:
        """Video frames of a training window: left audio context + motion and new frames + lookahead."""
        s, a = config.segment, config.audio
        return (
            a.left_context_frames
            + config.time.vae_temporal_stride * (s.motion_latents + s.new_latents)
            + a.lookahead_frames
        )

    @torch.no_grad()
    def encode(self, batch: dict) -> dict[str, Tensor]:
        """What the frozen parts make of a window, before any random choice: `latents` [B, C,
        1 + M + N, h, w] (the reference, then the window's frames), `still` [B, C, S, h, w] (the
        reference as a still video), `audio` windows [B, M + N, A, D] and the loss `weight`
        [B, 1, 1, h, w]. Stored once by `ihuman train lr-a2v --latent-cache` (latent_windows.py)."""
        cfg = self.parts.config
        s, left = cfg.segment, cfg.audio.left_context_frames
        video = batch["frames"][
            :, left : left + cfg.time.vae_temporal_stride * (s.motion_latents + s.new_latents)
        ]
        latents = self.parts.vae.encode(clip_with_reference(batch["reference"], video))
        features = self.parts.audio.encode_audio(batch["audio"])  # [B, T, D]
        points = batch["points"][:, left:]
        return {
            "latents": latents,
            "still": self.parts.vae.encode_still(batch["reference"], max(2, s.motion_latents)),
            "audio": latent_audio_windows(features, left, s.motion_latents + s.new_latents, cfg),
            "weight": mouth_weight(points, latents.shape[-2:], cfg.lr.width, cfg.lr.height),
        }

    @torch.no_grad()
    def assemble(self, encoded: dict[str, Tensor], start_of_stream: bool | None = None) -> LRA2VBatch:
        """A training batch from `encode`'s tensors: the motion latents are the still history
        (stages.Reference) for a share of batches, and noised while training."""
        cfg = self.parts.config
        latents, still = encoded["latents"], encoded["still"]
        first_new = 1 + cfg.segment.motion_latents
        if start_of_stream is None:
            start_of_stream = bool(torch.rand(()) < STREAM_START_RATE)
        motion = (still if start_of_stream else latents)[:, :, 1:first_new]
        B = latents.shape[0]
        if self.model.training:
            strength = MOTION_NOISE * torch.rand(B, 1, 1, 1, 1, device=motion.device)
            motion = motion + strength * torch.randn_like(motion)
        return LRA2VBatch(
            prefix=latents[:, :, :1],
            motion=motion,
            target=latents[:, :, first_new:],
            audio=encoded["audio"],
            text=tokenize([None] * B, cfg.text, latents.device),
            still=still[:, :, -1:],
            weight=encoded["weight"],
        )

    def make_batch(self, batch: dict, start_of_stream: bool | None = None) -> LRA2VBatch:
        """A training batch from a window of frames (None: the start of a stream by chance)."""
        return self.assemble(self.encode(batch), start_of_stream)

    def new_frames(self, values: Tensor) -> Tensor:
        """The video frames of a window's new latents, from a per-frame batch item [B, T, ...]."""
        cfg = self.parts.config
        s, stride = cfg.segment, cfg.time.vae_temporal_stride
        first = cfg.audio.left_context_frames + stride * s.motion_latents
        return values[:, first : first + stride * s.new_latents]

    def sample(
        self, data: LRA2VBatch, grad: bool, g: torch.Generator | None = None, steps: int | None = None
    ) -> Tensor:
        """New latents sampled as the engine does, but without guidance: `steps` (default: the
        config's lr_steps) Euler steps of the conditional velocity from one noise draw (the engine
        adds audio guidance, a second estimate per step that training does not pay for), with
        gradients through the last step only (reward feedback learning's truncation: the earlier
        steps' graph would cost memory for little signal). One step is the estimate at t = 0."""
        cond = lr_conditions(data)
        cfg = self.parts.config
        times = sampling_times(steps or cfg.flow.lr_steps, cfg.flow.lr_time_shift).tolist()
        z = randn(data.target.shape, generator=g, device=data.target.device)
        for i, (t0, t1) in enumerate(itertools.pairwise(times)):
            last = i == len(times) - 2
            with torch.set_grad_enabled(grad and last):
                t = torch.full((z.shape[0],), t0, device=z.device)
                z = z + (t1 - t0) * velocity_from_estimate(self.model(z, t, cond), z, t)
        return z

    def mouth_windows(self, data: LRA2VBatch, latents: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """The pixels around the lips of new latents [B, C, N, h, w], decoded after the window's
        prefix and motion latents: frames [B, 3, T, S, S] and the window's pixel corners [B, 2]
        (x, y), from the lips of `points` [B, T, K, 2].

        Only a window of LIP_CROP_CELLS latent cells is decoded (a convolutional decoder), a
        fraction of the cost of whole frames."""
        cfg = self.parts.config
        B, T = points.shape[:2]
        stride, (h, w) = cfg.time.vae_spatial_stride, latents.shape[-2:]
        size = min(LIP_CROP_CELLS, h, w)
        lips = kp.to_pixels(points[:, :, kp.LIPS].mean((1, 2)), cfg.lr.width, cfg.lr.height) / stride
        x0 = (lips[:, 0] - size / 2).round().long().clamp(0, w - size)
        y0 = (lips[:, 1] - size / 2).round().long().clamp(0, h - size)
        window = torch.cat([data.prefix, data.motion, latents], dim=2)
        window = torch.stack([window[i, :, :, y0[i] : y0[i] + size, x0[i] : x0[i] + size] for i in range(B)])
        frames = self.parts.vae.decode(window)[:, :, -T:]
        return frames, torch.stack((x0, y0), -1) * stride

    def mouth_loss(self, data: LRA2VBatch, latents: Tensor, points: Tensor, truth: Tensor) -> Tensor:
        """L1 [B] between the decoded lips of new latents (mouth_windows) and the same pixels of the
        true frames `truth` [B, T, 3, H, W], inside a margin of LIP_CROP_MARGIN cells.

        `loss` applies it to the clean estimate at the training flow time, which shapes every time
        the sampler passes through, and to a sample made like the engine's (`sample`), what is
        shown. Pixels against the truth cannot be met by moving anything but the mouth."""
        frames, corners = self.mouth_windows(data, latents, points)
        side, stride = frames.shape[-1], self.parts.config.time.vae_spatial_stride
        m = min(LIP_CROP_MARGIN, (side // stride - 1) // 2) * stride  # a small window keeps its middle
        true = torch.stack(
            [truth[i, :, :, y : y + side, x : x + side] for i, (x, y) in enumerate(corners.tolist())]
        ).transpose(1, 2)  # [B, 3, T, S, S]
        error = (frames.clamp(0, 1) - true)[..., m : side - m, m : side - m].abs()
        return error.mean((1, 2, 3, 4))

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        data = self.make_batch(batch)
        result = lr_a2v_step(self.model, data)
        points, truth = self.new_frames(batch["points"]), self.new_frames(batch["frames"])
        # Without audio (dropout) the mouth cannot be known: no mouth term for those samples.
        listened = result.keep["audio"].float()
        new = data.target.shape[2]
        mouth = self.mouth_loss(data, result.estimate[:, :, -new:], points, truth)
        mouth = (mouth * listened).sum() / listened.sum().clamp_min(1)
        sampled = self.mouth_loss(data, self.sample(data, grad=True), points, truth).mean()  # always hears
        stats = {
            "flow": float(result.loss.detach()),
            "mouth_l1": float(mouth.detach()),
            "mouth_sample_l1": float(sampled.detach()),
        }
        return result.loss + MOUTH_PIXEL_WEIGHT * (mouth + sampled), stats

    def latent_loss(self, encoded: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The flow loss alone on stored `encode` tensors (--latent-cache): no frames, so no
        pixel term on the lips; the mouth's latent cells keep their loss weight."""
        result = lr_a2v_step(self.model, self.assemble(encoded))
        return result.loss, {"flow": float(result.loss.detach())}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        """Held-out flow loss, and how much the audio lowers it on the mouth's cells: the loss there
        with each sample given another sample's audio minus with its own (0: the model does not
        listen; the first thing to check when lip sync does not come)."""
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        losses, gains = [], []
        for b in batches:
            data = self.make_batch(b, start_of_stream=False)
            mouth = replace(data, weight=(data.weight > 1 + MOUTH_LOSS_WEIGHT / 2).float())
            others = replace(mouth, audio=mouth.audio.roll(1, 0))
            for t in EVAL_TIMES:
                times = torch.full((data.target.shape[0],), t, device=self.device)
                noise = randn(data.target.shape, generator=g, device=self.device)
                losses.append(float(lr_a2v_step(self.model, data, noise=noise, t=times).loss))
                if data.target.shape[0] > 1:  # both with the same condition dropout draws
                    seed = int(torch.randint(2**31, (), generator=g))
                    own, other = (
                        lr_a2v_step(self.model, x, noise=noise, t=times, generator=_seeded(seed))
                        for x in (mouth, others)
                    )
                    gains.append(float(other.loss - own.loss))
        self.model.train()
        result = {"held_out_flow_loss": sum(losses) / len(losses)}
        if gains:
            result["held_out_mouth_audio_gain"] = sum(gains) / len(gains)
        return result


def hand_crops(frames: Tensor, points: Tensor, visible: Tensor, size: int) -> Tensor:
    """Crops [n, 3, size, size] around each visible hand of frames [N, 3, H, W] (keeps gradients)."""
    N, _, H, W = frames.shape
    crops = []
    for hand in ("hand_l", "hand_r"):
        group = kp.part(hand)
        centres = kp.to_pixels(points[:, group].mean(1), W, H)  # [N, 2]
        seen = visible[:, group].float().mean(1) > 0.9
        for i in range(N):
            if not seen[i]:
                continue
            x0 = int(centres[i, 0].clamp(size / 2, W - size / 2)) - size // 2
            y0 = int(centres[i, 1].clamp(size / 2, H - size / 2)) - size // 2
            crops.append(frames[i, :, y0 : y0 + size, x0 : x0 + size])
    return torch.stack(crops) if crops else frames.new_zeros(0, 3, size, size)


@dataclass
class HandReflTask(LRA2VTask):
    """Hand reward feedback learning on LR-A2V, mixed with its flow loss.

    Each step also samples the segment with K Euler steps — gradients only
    through the last one (ReFL) — decodes it, finds the hands of one random
    generated frame with the pose head, and scores them with the frozen hand
    evaluator: `L_hand = E[T - r_hand]` with T = 1, the best score.
    """

    evaluator: HandEvaluator
    weight: float = 0.1  # of L_hand against the flow loss
    steps: int = 2

    def frozen(self) -> list[nn.Module]:
        return [*super().frozen(), self.evaluator]

    def _reward(self, data: LRA2VBatch, latents: Tensor, frame: int) -> Tensor:
        video = self.parts.vae.decode(torch.cat([data.prefix, data.motion, latents], dim=2))
        frames = video[:, :, -(latents.shape[2] * self.parts.config.time.vae_temporal_stride) :][:, :, frame]
        with torch.no_grad():
            points, visible = self.parts.pose(frames.clamp(0, 1))
        crops = hand_crops(frames.clamp(0, 1), points, torch.sigmoid(visible) > 0.5, self.evaluator.crop)
        return self.evaluator.reward(crops)

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        data = self.make_batch(batch)
        flow = lr_a2v_step(self.model, data).loss
        frames = data.target.shape[2] * self.parts.config.time.vae_temporal_stride
        reward = self._reward(
            data, self.sample(data, grad=True, steps=self.steps), int(torch.randint(frames, ()))
        )
        hand = (1.0 - reward).mean() if reward.numel() else flow.new_zeros(())
        score = float(reward.detach().mean()) if reward.numel() else float("nan")
        return flow + self.weight * hand, {"flow": float(flow.detach()), "hand_reward": score}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        rewards = []
        for b in batches:
            data = self.make_batch(b, start_of_stream=False)
            latents = self.sample(data, grad=False, g=g, steps=self.steps)
            for frame in range(data.target.shape[2] * self.parts.config.time.vae_temporal_stride):
                rewards.append(self._reward(data, latents, frame))
        self.model.train()
        scores = torch.cat(rewards)
        return {
            "hand_reward": float(scores.mean()) if scores.numel() else float("nan"),
            "hands": float(scores.numel()),
        }
