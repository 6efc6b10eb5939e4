"""The data-channel protocol: msgpack maps with a schema version, validated on receipt.

Every message is a map {"v": 1, "type": ..., ...fields}. The server sends
`hello` once and `stats` every second; what a client may send is in
commands.py. A message that does not validate is answered with an `error`
message and otherwise ignored.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgpack

from engine.streaming.stats import SessionStats

VERSION = 1
MAX_MESSAGE_BYTES = 4096


class MessageError(ValueError):
    """A data-channel message that does not follow the schema."""


def parse(data: bytes | str) -> dict[str, Any]:
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


def encode(kind: str, **fields: Any) -> bytes:
    return msgpack.packb({"v": VERSION, "type": kind, **fields}, use_bin_type=True)


def stats_message(stats: SessionStats, outputs: list[dict[str, object]] | None = None) -> bytes:
    """The once-a-second stats push (with the state of the session's outputs, if any)."""
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
        # Per stage and segment, p50 and p99 (ms): what a client cannot see from the outside.
        stage_ms={
            name: None if v is None else [round(v["p50"], 1), round(v["p99"], 1)]
            for name, v in s["stage_ms"].items()
        },
        outputs=outputs or [],
    )
