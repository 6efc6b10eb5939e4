"""Reference images: formats, orientation, transparency, limits, fitting."""

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.media.errors import MediaError
from engine.media.image import fit_image, read_image


def _png(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_reads_rgb_from_path_and_bytes(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    (tmp_path / "a.jpg").write_bytes(_png(image, format="JPEG", quality=95))
    for source in (tmp_path / "a.jpg", _png(image)):
        pixels = read_image(source)
        assert pixels.shape == (3, 30, 40) and pixels.dtype == torch.uint8
        assert (pixels[:, 15, 20].int() - torch.tensor([10, 200, 30])).abs().max() <= 3


def test_transparency_becomes_white_and_exif_rotation_applies() -> None:
    clear = Image.new("RGBA", (8, 4), (255, 0, 0, 0))
    assert read_image(_png(clear))[:, 0, 0].tolist() == [255, 255, 255]
    wide = Image.new("RGB", (8, 4), (0, 0, 255))
    exif = wide.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = read_image(_png(wide, format="JPEG", exif=exif.tobytes()))
    assert rotated.shape == (3, 8, 4)


def test_huge_images_are_refused_before_decoding() -> None:
    bomb = _png(Image.new("1", (8000, 6000)))  # 48 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.raises(MediaError, match="48,000,000 pixels"):
        read_image(bomb)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"not an image at all", "not an image format"), (None, "corrupted")],
)
def test_bad_files_are_refused_with_a_reason(data: bytes | None, message: str) -> None:
    if data is None:
        data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))[:80]  # truncated
    with pytest.raises(MediaError, match=message):
        read_image(data)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_fit_covers_and_centre_crops() -> None:
    image = torch.zeros(3, 100, 100, dtype=torch.uint8)
    image[:, :, 40:60] = 255  # a vertical white band in the middle
    fitted = fit_image(image, 32, 16)
    assert fitted.shape == (3, 16, 32)
    assert fitted[:, :, 16].min() > 0.9 and fitted[:, :, 2].max() < 0.1  # band stays centred, no borders
