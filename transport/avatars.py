"""Uploaded reference pictures, by id: checked, decoded once, kept in memory (bounded)."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor

from engine.media.errors import MediaError
from engine.media.image import read_image
from transport.errors import RequestError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16_000_000


@dataclass(frozen=True)
class Avatar:
    id: str
    image: Tensor  # uint8 [3, H, W]


class AvatarStore:
    """At most `capacity` pictures; the least recently used one goes first."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()

    def add(self, data: bytes, avatar_id: str | None = None) -> Avatar:
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(f"image of {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}", 413)
        try:
            image = read_image(data, max_pixels=MAX_UPLOAD_PIXELS, formats=ACCEPTED_FORMATS)
        except MediaError as err:
            raise RequestError(str(err), 415 if "not accepted" in str(err) else 400) from None
        avatar = Avatar(avatar_id or secrets.token_urlsafe(9), image)
        self._avatars[avatar.id] = avatar
        while len(self._avatars) > self.capacity:
            self._avatars.popitem(last=False)
        return avatar

    def get(self, avatar_id: str) -> Avatar:
        try:
            self._avatars.move_to_end(avatar_id)
            return self._avatars[avatar_id]
        except KeyError:
            raise RequestError(f"no avatar {avatar_id!r}; upload one with POST /avatars", 404) from None

    def ids(self) -> list[str]:
        return list(self._avatars)
