"""Checks on the SDP offers peers send, before aiortc acts on them."""

from __future__ import annotations

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from transport.errors import RequestError


def check_offer(offer: RTCSessionDescription) -> None:
    """Refuse an SDP offer that does not parse or has no video section (the avatar is video)."""
    try:
        parsed = SessionDescription.parse(offer.sdp)
    # aiortc's parser meets a malformed line with whatever fails first (asserts, StopIteration,
    # ...): on untrusted input any failure of it is a refusal.
    except Exception as err:
        raise RequestError(f"the SDP offer does not parse: {type(err).__name__} {err}") from None
    if not any(m.kind == "video" for m in parsed.media):
        raise RequestError("the SDP offer has no video section: the avatar is video")
