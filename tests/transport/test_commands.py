"""Data-channel commands: decoded against their declared fields, limited, applied to the session."""

from __future__ import annotations

import msgpack
import pytest

from transport import commands, messages
from transport.commands import Interrupt, Mute, SetAvatar, SetText
from transport.messages import MessageError


def test_each_command_decodes_to_its_class_with_its_fields() -> None:
    assert commands.decode(messages.encode("interrupt")) == Interrupt()
    assert commands.decode(messages.encode("mute", muted=True)) == Mute(muted=True)
    assert commands.decode(messages.encode("set_text", text="a calm voice")) == SetText("a calm voice")
    assert commands.decode(messages.encode("set_avatar", avatar="demo-1")) == SetAvatar("demo-1")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("text", "binary msgpack"),
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1]), "must be a map"),
        (msgpack.packb({"v": 9, "type": "mute", "muted": True}), "schema version 9"),
        (b"\x00" * (messages.MAX_MESSAGE_BYTES + 1), "limit"),
        (messages.encode("dance"), "unknown message type 'dance'"),
        (messages.encode("mute"), "missing field 'muted'"),
        (messages.encode("mute", muted="yes"), "mute.muted must be bool"),
        (messages.encode("mute", muted=True, loud=1), "unknown fields ['loud']"),
        (messages.encode("set_text", text="x" * (commands.MAX_TEXT_BYTES + 1)), "bytes of text"),
        (messages.encode("set_avatar", avatar=""), "bad avatar id"),
        (messages.encode("set_avatar", avatar="a" * (commands.AVATAR_ID_CHARS + 1)), "bad avatar id"),
    ],
)
def test_bad_messages_say_what_is_wrong(data: bytes | str, says: str) -> None:
    with pytest.raises(MessageError) as err:
        commands.decode(data)
    assert says in str(err.value)


def test_every_command_is_registered_under_its_own_type() -> None:
    assert set(commands.COMMANDS) == {"interrupt", "set_avatar", "set_text", "mute"}
    for name, command in commands.COMMANDS.items():
        assert command.type == name
