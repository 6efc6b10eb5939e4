"""The data-channel protocol: msgpack maps with a schema version, validated on receipt.

Every message is a map {"v": 1, "type": ..., ...fields}. The server sends
`hello` once and `stats` every second; the client may send `interrupt`,
`set_avatar`, `set_text` and `mute`. A message that does not validate is
answered with an `error` message and otherwise ignored.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgpack

from engine.streaming.stats import SessionStats

VERSION = 1
MAX_MESSAGE_BYTES = 4096
MAX_TEXT_BYTES = 512
AVATAR_ID_CHARS = 64

# Client -> server: field name -> (type, required).
CLIENT_MESSAGES: dict[str, dict[str, tuple[type, bool]]] = {
    "interrupt": {},
    "set_avatar": {"avatar": (str, True)},
    "set_text": {"text": (str, True)},
    "mute": {"muted": (bool, True)},
}


class MessageError(ValueError):
    """A data-channel message that does not follow the schema."""


def _parse(data: bytes | str) -> dict[str, Any]:
    if isinstance(data, str):
        raise MessageError("messages are binary msgpack, not text")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as err:
        raise MessageError(f"not msgpack: {err}") from None
    if not isinstance(message, dict):
        raise MessageError("a message must be a map")
    if message.get("v") != VERSION:
        raise MessageError(f"schema version {message.get('v')!r}; this server speaks {VERSION}")
    return message


def decode(data: bytes | str) -> dict[str, Any]:
    """A validated client message; MessageError says what is wrong."""
    message = _parse(data)
    kind = message.get("type")
    if kind not in CLIENT_MESSAGES:
        raise MessageError(f"unknown message type {kind!r}; known: {', '.join(CLIENT_MESSAGES)}")
    fields = CLIENT_MESSAGES[kind]
    extra = set(message) - {"v", "type", *fields}
    if extra:
        raise MessageError(f"{kind}: unknown fields {sorted(extra)}")
    for name, (kind_of, required) in fields.items():
        if name not in message and required:
            raise MessageError(f"{kind}: missing field {name!r}")
        if name in message and not isinstance(message[name], kind_of):
            raise MessageError(f"{kind}.{name} must be {kind_of.__name__}")
    if kind == "set_text" and len(message["text"].encode()) > MAX_TEXT_BYTES:
        raise MessageError(f"set_text: more than {MAX_TEXT_BYTES} bytes of text")
    if kind == "set_avatar" and not (0 < len(message["avatar"]) <= AVATAR_ID_CHARS):
        raise MessageError("set_avatar: bad avatar id")
    return message


def encode(kind: str, **fields: Any) -> bytes:
    return msgpack.packb({"v": VERSION, "type": kind, **fields}, use_bin_type=True)


def stats_message(stats: SessionStats) -> bytes:
    """The once-a-second stats push."""
    s = asdict(stats)
    latency = s["added_latency_ms"] or {}
    return encode(
        "stats",
        fps=round(s["fps_out"], 2),
        latency_p50_ms=latency.get("p50"),
        latency_p99_ms=latency.get("p99"),
        delay_ms=round(s["target_delay_ms"], 1),
        fallbacks=sum(s["fallbacks"].values()),
        degrade_level=s["degrade_level"],
        av_offset_ms=s["av_offset_ms"],
        frames=s["frames_out"],
        speech=s["speech"],
    )
