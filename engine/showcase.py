"""Pictures of what a bundle does, for docs/demo.md: `python -m engine.showcase --bundle B --out docs`.

- `demo.gif`: a held-out character speaking held-out speech, and under it the
  mouth opening the audio asks for (ground truth, grey) and the one the pose
  head reads off the generated frames (red), with a cursor at the shown frame;
- `demo_sheet.png`: held-out characters, one a row: the reference picture, the
  ground-truth frame where the audio opens the mouth most, the generated frame
  there, and the generated frame where the audio closes it most;
- `demo_photos.png`: real photos (tests/fixtures/photos), one a row: the
  picture as the engine frames it, then generated frames spread over a take.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.data.clip import make_clip
from engine.data.speech import speech_take
from engine.evaluation import HELD_OUT, generate
from engine.media.framing import NoFaceError, framer
from engine.media.image import fit_image, read_image
from engine.parts import Parts

log = logging.getLogger(__name__)
CURVE_HEIGHT = 60
PHOTOS = Path(__file__).parents[1] / "tests" / "fixtures" / "photos"  # public-domain photos, in the repo


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min() + 1e-9)


@torch.no_grad()
def speak(
    parts: Parts, character: int, seconds: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """(HR frames uint8 [T, H, W, 3], generated mouth opening [T], ground-truth opening [T],
    the reference picture uint8 [3, H, W], the ground-truth frames uint8 [T, H, W, 3])."""
    cfg = parts.config
    audio = speech_take(character + 500, seconds, cfg.time.sample_rate)
    frames_n = round(len(audio) / cfg.time.samples_per_frame)
    truth = make_clip(character, frames_n / cfg.time.fps, cfg.hr.width, cfg.hr.height, cfg.time, speech=audio)
    image = make_clip(character, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]
    frames, opening = [], []
    for decoded, hr, keep in generate(parts, image, audio, refine=True):
        assert hr is not None
        frames.append(hr[:keep].numpy())
        opening.append(
            parts.pose.mouth_opening(decoded.frames[:keep], decoded.keypoints[:keep]).float().cpu().numpy()
        )
    video = np.concatenate(frames)[:frames_n]
    T = len(video)
    true_frames = truth.frames[:T].permute(0, 2, 3, 1).numpy()
    return video, np.concatenate(opening)[:T], truth.mouth_open.numpy()[:T], image, true_frames


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


def _grid(rows: list[list[np.ndarray]], path: Path) -> None:
    H, W, _ = rows[0][0].shape
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * W, len(rows) * H), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (c * W, r * H))
    canvas.save(path)


def _hwc(image: torch.Tensor, width: int, height: int) -> np.ndarray:
    """uint8 [3, h, w] -> uint8 [height, width, 3], framed as the engine frames a reference."""
    return (fit_image(image, width, height) * 255).round().byte().permute(1, 2, 0).numpy()


def sheet(parts: Parts, characters: int, path: Path, seconds: float = 3.0) -> None:
    """Per held-out character: reference | truth (mouth open) | generated there | generated closed."""
    hr = parts.config.hr
    rows = []
    for i in range(characters):
        video, _, truth, image, true_frames = speak(parts, HELD_OUT + 900 + i, seconds)
        open_, closed = int(np.argmax(truth)), int(np.argmin(truth))
        rows.append([_hwc(image, hr.width, hr.height), true_frames[open_], video[open_], video[closed]])
    _grid(rows, path)


@torch.no_grad()
def photo_sheet(parts: Parts, photos: list[Path], path: Path, seconds: float = 4.0) -> None:
    """Per photo: the picture as the engine frames it, then 3 generated frames spread over a take."""
    cfg, hr = parts.config, parts.config.hr
    audio = speech_take(HELD_OUT + 77, seconds, cfg.time.sample_rate)
    rows = []
    for photo in photos:
        try:
            image = framer(cfg, True, str(photo))(read_image(photo))  # as uploads and renders are framed
        except NoFaceError as err:  # a photo the engine would refuse is not shown
            log.warning("%s", err)
            continue
        video = np.concatenate(
            [f[:keep].numpy() for _, f, keep in generate(parts, image, audio, refine=True)]
        )
        picks = np.linspace(len(video) // 4, len(video) - 1, 3).astype(int)
        rows.append([_hwc(image, hr.width, hr.height), *(video[k] for k in picks)])
    _grid(rows, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="folder of real photos (*.jpg)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    parts = Parts.from_bundle(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    video, generated, truth, _, _ = speak(parts, HELD_OUT + 900, args.seconds)
    gif(video, generated, truth, args.out / "demo.gif")
    sheet(parts, 4, args.out / "demo_sheet.png")
    photo_sheet(parts, sorted(args.photos.glob("*.jpg")), args.out / "demo_photos.png")
    log.info("wrote demo.gif, demo_sheet.png and demo_photos.png to %s", args.out)


if __name__ == "__main__":
    main()
