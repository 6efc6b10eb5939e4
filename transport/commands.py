"""What a talker may ask of its session over the data channel: each command's fields, limits and
effect, in one place.

messages.py owns the wire format (msgpack maps with a schema version); a command class here names
its message type, declares its fields as dataclass fields (checked against their types on
receipt), validates its limits and applies itself to the avatar session. Adding a command is
adding one class to `COMMANDS`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

from transport import messages
from transport.avatars import AvatarStore
from transport.messages import MessageError
from transport.session import AvatarSession

MAX_TEXT_BYTES = 512
AVATAR_ID_CHARS = 64


@dataclass(frozen=True)
class Command(ABC):
    type: ClassVar[str]

    @abstractmethod
    def apply(self, live: AvatarSession, avatars: AvatarStore) -> None:
        """Carry the command out on the talker's session."""


@dataclass(frozen=True)
class Interrupt(Command):
    """Drop the segments in flight: the avatar stops answering what was said before."""

    type: ClassVar[str] = "interrupt"

    def apply(self, live: AvatarSession, avatars: AvatarStore) -> None:
        live.session.interrupt()


@dataclass(frozen=True)
class SetText(Command):
    """Change the text prompt of the next segments."""

    type: ClassVar[str] = "set_text"
    text: str

    def __post_init__(self) -> None:
        if len(self.text.encode()) > MAX_TEXT_BYTES:
            raise MessageError(f"set_text: more than {MAX_TEXT_BYTES} bytes of text")

    def apply(self, live: AvatarSession, avatars: AvatarStore) -> None:
        live.session.set_text(self.text)


@dataclass(frozen=True)
class Mute(Command):
    """Feed silence instead of the microphone (the avatar goes quiet; the call stays up)."""

    type: ClassVar[str] = "mute"
    muted: bool

    def apply(self, live: AvatarSession, avatars: AvatarStore) -> None:
        live.muted = self.muted


@dataclass(frozen=True)
class SetAvatar(Command):
    """Switch to an uploaded (or demo) picture; takes effect at the next segment."""

    type: ClassVar[str] = "set_avatar"
    avatar: str

    def __post_init__(self) -> None:
        if not 0 < len(self.avatar) <= AVATAR_ID_CHARS:
            raise MessageError("set_avatar: bad avatar id")

    def apply(self, live: AvatarSession, avatars: AvatarStore) -> None:
        image = avatars.get(self.avatar).image  # RequestError (unknown id) goes back to the client
        live.spawn(live.session.set_reference(image), "set-avatar")


COMMANDS: dict[str, type[Command]] = {c.type: c for c in (Interrupt, SetAvatar, SetText, Mute)}


def decode(data: bytes | str) -> Command:
    """The command a client message asks for; MessageError says what is wrong with it."""
    message = messages.parse(data)
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in COMMANDS:
        raise MessageError(f"unknown message type {kind!r}; known: {', '.join(COMMANDS)}")
    command = COMMANDS[kind]
    types = get_type_hints(command)
    fields = [f.name for f in dataclasses.fields(command)]
    extra = set(message) - {"v", "type", *fields}
    if extra:
        raise MessageError(f"{kind}: unknown fields {sorted(extra)}")
    values: dict[str, Any] = {}
    for name in fields:
        if name not in message:
            raise MessageError(f"{kind}: missing field {name!r}")
        if not isinstance(message[name], types[name]):
            raise MessageError(f"{kind}.{name} must be {types[name].__name__}")
        values[name] = message[name]
    return command(**values)
