"""A peer's life in an avatar session: offer -> answer, its tracks and data channel, its end.

The talker's connection sends the microphone and receives the avatar; a viewer's receives only.
Both get the session's tracks through its bounded relays. A peer that fails, closes or does not
connect within the timeout is reported once through `on_gone`: the registry decides what that
means for the session (a talker's end ends it; a viewer's end drops only the viewer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from transport import messages
from transport.codecs import prefer_codecs
from transport.errors import RequestError
from transport.session import AvatarSession, Peer

log = logging.getLogger(__name__)

MessageHandler = Callable[[AvatarSession, Peer, bytes | str], None]
GoneHandler = Callable[[AvatarSession, Peer], Awaitable[None]]


@dataclass(frozen=True)
class PeerEvents:
    """What the owner of the session does when a peer sends a message or goes away."""

    on_message: MessageHandler
    on_gone: GoneHandler


async def connect_peer(
    live: AvatarSession,
    offer: RTCSessionDescription,
    role: str,
    configuration: RTCConfiguration,
    events: PeerEvents,
    connect_timeout_s: float,
) -> str:
    """Add a peer for `offer` to the session; returns the answer SDP."""
    pc = RTCPeerConnection(configuration)
    peer = Peer(pc, role)
    live.peers.append(peer)

    @pc.on("datachannel")
    def on_channel(channel: RTCDataChannel) -> None:
        peer.channel = channel
        channel.send(messages.encode("hello", session=live.id, role=role))

        @channel.on("message")
        def on_message(data: bytes | str) -> None:
            events.on_message(live, peer, data)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio" and role == "talker":
            live.spawn(live.ingest(track), "microphone")

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("%s: %s peer %s", live.id, role, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await events.on_gone(live, peer)

    try:
        await pc.setRemoteDescription(offer)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                prefer_codecs(transceiver)
                pc.addTrack(live.video_relay.subscribe())
            elif transceiver.kind == "audio":
                pc.addTrack(live.audio_relay.subscribe())
        await pc.setLocalDescription(await pc.createAnswer())
    # The offer is the client's: whatever aiortc meets in it (it raises assorted errors on offers
    # that parse but do not fit together) is a refused request, and the peer is let go.
    except Exception as err:
        live.peers.remove(peer)
        await pc.close()
        raise RequestError(f"the SDP offer cannot be used: {type(err).__name__}: {err}") from None
    live.spawn(_connect_timeout(live, peer, events, connect_timeout_s), f"{role}-timeout")
    return pc.localDescription.sdp


async def _connect_timeout(live: AvatarSession, peer: Peer, events: PeerEvents, seconds: float) -> None:
    await asyncio.sleep(seconds)
    if peer.pc.connectionState != "connected":
        log.warning("%s: %s did not connect within %.0f s", live.id, peer.role, seconds)
        await events.on_gone(live, peer)
