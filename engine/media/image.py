"""Reference images: read any common format with limits, fit them to a frame size.

The size is checked from the header before any pixel is decoded, so a small
file that claims a huge image (a decompression bomb) costs nothing. EXIF
orientation is applied (phone photos), and transparency is composited onto
white.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from engine.media.errors import MediaError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 36_000_000  # a 36-megapixel photo (7360x4912) is the largest accepted
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # larger files are refused before they are read


def read_image(
    source: Path | str | bytes, max_pixels: int = MAX_IMAGE_PIXELS, formats: Collection[str] | None = None
) -> Tensor:
    """An image file (path or bytes) -> uint8 RGB [3, H, W]; MediaError when it cannot be used.

    formats: accepted Pillow format names (e.g. PNG, JPEG, WEBP); None accepts any it reads.
    """
    name = "the uploaded image" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise MediaError(f"{name}: no such file")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise MediaError(f"{name}: {path.stat().st_size} bytes, more than the {MAX_IMAGE_BYTES} accepted")
        source = path.read_bytes()
    elif len(source) > MAX_IMAGE_BYTES:
        raise MediaError(f"{name}: {len(source)} bytes, more than the {MAX_IMAGE_BYTES} accepted")
    if not source:
        raise MediaError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source))
            if formats is not None and image.format not in formats:
                raise MediaError(f"{name}: {image.format} images are not accepted; send {', '.join(formats)}")
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise MediaError(
                    f"{name}: {width}x{height} is {width * height:,} pixels, more than the "
                    f"{max_pixels:,} accepted; scale it down first"
                )
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise MediaError(f"{name}: not an image format we read (PNG, JPEG, WebP, BMP, GIF, TIFF)") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise MediaError(f"{name}: the image is corrupted or truncated ({e})") from None
    log.debug("read %s: %dx%d", name, width, height)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def fit_image(image: Tensor, width: int, height: int) -> Tensor:
    """uint8 [3, H, W] -> float [3, height, width] in [0, 1]: scaled to cover the frame, centre-cropped.

    Covering (not letterboxing) keeps the person as large as the frame allows and
    adds no borders the generator never saw in training.
    """
    return cover(image[None].float() / 255.0, width, height)[0].clamp(0, 1)


def cover_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """How `cover` frames a w x h picture in width x height: (scaled width, scaled height, left, top)
    -- the picture is scaled to that size, then cut at (left, top)."""
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    return sw, sh, (sw - width) // 2, (sh - height) // 2


def cover(frames: Tensor, width: int, height: int) -> Tensor:
    """float [N, 3, H, W] -> [N, 3, height, width]: scaled to cover the frame, centre-cropped.

    The one framing rule of the engine: a picture meets each resolution this way,
    so the LR video of a preset whose LR aspect differs from the HR one (tiny:
    160x96 vs 320x176) is the centre of the HR frame, in training as at inference.
    """
    h, w = frames.shape[-2:]
    sw, sh, left, top = cover_box(w, h, width, height)
    if (sh, sw) != (h, w):
        frames = F.interpolate(frames, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)
    return frames[..., top : top + height, left : left + width]
