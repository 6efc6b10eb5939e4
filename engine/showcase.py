"""Pictures of what a bundle does, for docs/demo.md: `python -m engine.showcase --bundle B --out docs`.

- `demo.gif`: a held-out character speaking held-out speech, and under it the
  mouth opening the audio asks for (ground truth, grey) and the one the pose
  head reads off the generated frames (red), with a cursor at the shown frame;
- `demo_sheet.png`: generated frames of several held-out characters, mouths
  open and closed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.data.clip import make_clip
from engine.data.motion import motion_from_audio
from engine.data.speech import speech_take
from engine.evaluation import HELD_OUT, generate
from engine.parts import Parts

CURVE_HEIGHT = 60


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min() + 1e-9)


@torch.no_grad()
def speak(parts: Parts, character: int, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HR frames uint8 [T, H, W, 3], generated mouth opening [T], ground-truth opening [T])."""
    cfg = parts.config
    audio = speech_take(character + 500, seconds, cfg.time.sample_rate)
    frames_n = round(len(audio) / cfg.time.samples_per_frame)
    truth = motion_from_audio(audio[: frames_n * cfg.time.samples_per_frame], character, cfg.time, frames_n)
    image = make_clip(character, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]
    frames, opening = [], []
    for decoded, hr, keep in generate(parts, image, audio, refine=True):
        assert hr is not None
        frames.append(hr[:keep].numpy())
        opening.append(
            parts.pose.mouth_opening(decoded.frames[:keep], decoded.keypoints[:keep]).float().cpu().numpy()
        )
    video = np.concatenate(frames)[:frames_n]
    return video, np.concatenate(opening)[:frames_n], truth.mouth_open.numpy()[: len(video)]


def gif(video: np.ndarray, generated: np.ndarray, truth: np.ndarray, path: Path, every: int = 2) -> None:
    T, H, W, _ = video.shape
    g, t = _normalised(generated), _normalised(truth)
    xs = np.linspace(4, W - 4, T)
    images = []
    for i in range(0, T, every):
        canvas = Image.new("RGB", (W, H + CURVE_HEIGHT), "white")
        canvas.paste(Image.fromarray(video[i]), (0, 0))
        draw = ImageDraw.Draw(canvas)
        for values, colour in ((t, (150, 150, 150)), (g, (210, 40, 40))):
            ys = H + CURVE_HEIGHT - 6 - values * (CURVE_HEIGHT - 12)
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=1)
        draw.line([(xs[i], H), (xs[i], H + CURVE_HEIGHT)], fill=(40, 40, 200))
        images.append(canvas)
    images[0].save(path, save_all=True, append_images=images[1:], duration=40 * every, loop=0, optimize=True)


def sheet(parts: Parts, characters: int, path: Path, seconds: float = 3.0) -> None:
    tiles = []
    for i in range(characters):
        video, opening, _ = speak(parts, HELD_OUT + 900 + i, seconds)
        tiles += [video[int(np.argmin(opening))], video[int(np.argmax(opening))]]  # closed, open
    H, W, _ = tiles[0].shape
    columns = 4
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * W, rows * H), "white")
    for k, tile in enumerate(tiles):
        canvas.paste(Image.fromarray(tile), ((k % columns) * W, (k // columns) * H))
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = Parts.from_bundle(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    video, generated, truth = speak(parts, HELD_OUT + 900, args.seconds)
    gif(video, generated, truth, args.out / "demo.gif")
    sheet(parts, 4, args.out / "demo_sheet.png")
    print(f"wrote {args.out / 'demo.gif'} and {args.out / 'demo_sheet.png'}")


if __name__ == "__main__":
    main()
