"""Uploaded reference pictures, by id: checked, decoded once, framed by the face (engine.media.framing),
kept in memory (bounded)."""

from __future__ import annotations

import io
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch import Tensor

from engine.media.errors import MediaError
from engine.media.framing import NoFaceError
from engine.media.image import read_image
from transport.errors import RequestError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16_000_000


THUMBNAIL_WIDTH = 320  # the picker's preview


@dataclass(frozen=True)
class Avatar:
    id: str
    image: Tensor  # uint8 [3, H, W]
    thumbnail: bytes  # PNG for the page's picker
    demo: bool = False  # shipped with the demo bundle: never evicted


def _thumbnail(image: Tensor) -> bytes:
    _, h, w = image.shape
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    picture = picture.resize((THUMBNAIL_WIDTH, max(1, round(h * THUMBNAIL_WIDTH / w))))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class AvatarStore:
    """The demo pictures, plus at most `capacity` uploads (the least recently used goes first).

    frame: what an upload goes through before it is kept (the server frames photos by their face
    and refuses photos without one: NoFaceError); the demo pictures are framed already.
    on_evict: told the id of each upload let go (a fleet's workers let go of it too)."""

    def __init__(
        self,
        capacity: int | None = 64,
        frame: Callable[[Tensor], Tensor] | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.frame = frame
        self.on_evict = on_evict
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()

    def add(self, data: bytes, avatar_id: str | None = None, *, demo: bool = False) -> Avatar:
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(f"image of {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}", 413)
        try:
            image = read_image(data, max_pixels=MAX_UPLOAD_PIXELS, formats=ACCEPTED_FORMATS)
        except MediaError as err:
            raise RequestError(str(err), 415 if "not accepted" in str(err) else 400) from None
        if self.frame is not None and not demo:
            try:
                image = self.frame(image)
            except NoFaceError as err:
                raise RequestError(str(err), 422) from None
        return self.keep(Avatar(avatar_id or secrets.token_urlsafe(9), image, _thumbnail(image), demo))

    def keep(self, avatar: Avatar) -> Avatar:
        """Store a picture that is already checked and framed (a fleet worker's copy)."""
        self._avatars[avatar.id] = avatar
        if self.capacity is not None:
            uploads = [a.id for a in self._avatars.values() if not a.demo]
            for old in uploads[: max(0, len(uploads) - self.capacity)]:
                self.forget(old)
                if self.on_evict is not None:
                    self.on_evict(old)
        return avatar

    def forget(self, avatar_id: str) -> None:
        self._avatars.pop(avatar_id, None)

    def all(self) -> list[Avatar]:
        return list(self._avatars.values())

    def add_folder(self, folder: Path) -> list[Avatar]:
        """The demo pictures of a bundle (its avatars/*.png), named after their files."""
        return [self.add(p.read_bytes(), p.stem, demo=True) for p in sorted(folder.glob("*.png"))]

    def get(self, avatar_id: str) -> Avatar:
        try:
            self._avatars.move_to_end(avatar_id)
            return self._avatars[avatar_id]
        except KeyError:
            raise RequestError(f"no avatar {avatar_id!r}; upload one with POST /avatars", 404) from None

    def listing(self) -> list[dict[str, str | bool]]:
        """Demo pictures first, then uploads, newest last."""
        ordered = sorted(self._avatars.values(), key=lambda a: not a.demo)
        return [{"id": a.id, "demo": a.demo} for a in ordered]

    def first_demo(self) -> Avatar | None:
        return next((a for a in self._avatars.values() if a.demo), None)
