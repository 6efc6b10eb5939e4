"""The bounded relay: every subscriber gets the frames in order, a stalled one holds at most its
limit (oldest dropped), and the source's end reaches everyone."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from transport.relay import BoundedRelay

pytestmark = pytest.mark.asyncio


class CountingAudio(MediaStreamTrack):
    """`frames` 20 ms audio frames numbered by pts, then the end of the stream."""

    kind = "audio"

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.left, self.pts = frames, 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0)
        if self.left == 0:
            raise MediaStreamError
        self.left -= 1
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 320), np.int16), format="s16", layout="mono")
        frame.pts, frame.sample_rate = self.pts, 16_000
        self.pts += 320
        return frame


async def _drain(track: MediaStreamTrack) -> list[int]:
    """The pts of every frame until the track ends (it must end)."""
    seen = []
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return seen
        seen.append(frame.pts)


async def test_readers_get_everything_and_a_stalled_one_holds_at_most_its_limit() -> None:
    relay = BoundedRelay(CountingAudio(1000), limit=50)
    reader, stalled = relay.subscribe(), relay.subscribe()
    seen = await _drain(reader)
    assert seen == [320 * i for i in range(1000)]
    # The stalled one never read: it kept the newest 49 frames and the end, and counted the rest.
    assert stalled.backlog == 50 and stalled.dropped == 951
    assert relay.dropped == 951  # what the server's metrics report for the session
    late = await _drain(stalled)
    assert late == [320 * i for i in range(951, 1000)]


async def test_a_subscriber_that_leaves_gets_nothing_more_and_the_others_carry_on() -> None:
    relay = BoundedRelay(CountingAudio(20), limit=1)
    leaving, staying = relay.subscribe(), relay.subscribe()
    assert (await leaving.recv()).pts == 0
    leaving.stop()
    with pytest.raises(MediaStreamError):
        await leaving.recv()
    assert (await _drain(staying))[-1] == 320 * 19  # limit 1: the newest frame, never an old one


async def test_closing_the_relay_ends_every_read() -> None:
    relay = BoundedRelay(CountingAudio(10**9), limit=4)
    track = relay.subscribe()
    await track.recv()
    await relay.close()
    assert len(await _drain(track)) <= 4  # what was queued, then the end
    with pytest.raises(ValueError, match="at least 1"):
        BoundedRelay(CountingAudio(1), limit=0)
