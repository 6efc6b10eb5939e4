"""The harness's content marks survive what a call does to them: the frame code through VP8 and
H.264 at the sizes and lowest bitrates we send, the tone marks through Opus."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import get_decoder, get_encoder
from aiortc.codecs.h264 import MIN_BITRATE as H264_MIN_BITRATE
from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.codecs.vpx import MIN_BITRATE as VP8_MIN_BITRATE
from aiortc.codecs.vpx import vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from engine.data.clip import make_clip
from engine.data.speech import speech_take
from transport import stamps
from transport.codecs import LowLatencyH264Encoder
from transport.stamps import (
    MARK_IDS,
    FrameStamp,
    MarkListener,
    cell_size,
    find_marks,
    mark_burst,
    read_code,
    stamp_yuv420p,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000)
H264 = RTCRtpCodecParameters(
    mimeType="video/H264",
    clockRate=90_000,
    parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1", "profile-level-id": "42e01f"},
)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """2 s of a procedural character talking and moving: [T, H, W, 3] uint8."""
    return make_clip(3, 2.0, 640, 352).frames.permute(0, 2, 3, 1).numpy()


@pytest.mark.slow  # encodes and decodes 200 frames
@pytest.mark.parametrize("size", [(1280, 720), (640, 360)])
@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_every_frame_code_is_read_back_after_the_codec(
    clip: np.ndarray, codec: str, size: tuple[int, int]
) -> None:
    if codec == "vp8":
        encoder, decoder, depayload = get_encoder(VP8), get_decoder(VP8), vp8_depayload
        encoder.target_bitrate = VP8_MIN_BITRATE  # the worst the congestion control goes to
    else:
        encoder, decoder = LowLatencyH264Encoder(), get_decoder(H264)
        encoder.target_bitrate = H264_MIN_BITRATE

        def depayload(payload: bytes) -> bytes:
            return H264PayloadDescriptor.parse(payload)[1]

    width, height = size
    sent, read = [], []
    for i, image in enumerate(clip):
        planes = (
            av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            .reformat(width=width, height=height, format="yuv420p")
            .to_ndarray()
        )
        stamp = FrameStamp(
            60_000 + i, i // 25 % MARK_IDS if i % 7 else None, i * 37 % 8000, i * 53 % 8000 - 4000
        )
        stamp_yuv420p(planes, stamp)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
        data = b"".join(depayload(p) for p in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            read.append(read_code(decoded.to_ndarray(format="yuv420p")[: decoded.height]))
        sent.append(stamp)
    assert read == sent  # 100 %: every frame, every field


def test_a_damaged_code_is_rejected_not_misread() -> None:
    luma = np.full((360, 640), 128, np.uint8)
    assert read_code(luma) is None  # no code at all
    planes = np.full((540, 640), 128, np.uint8)
    stamp_yuv420p(planes, FrameStamp(7, 3, 120, -40))
    assert read_code(planes[:360]) == FrameStamp(7, 3, 120, -40)
    cell = cell_size(360)
    for row, col in [(0, 0), (3, 5), (6, 2)]:  # flip one cell at a time
        damaged = planes[:360].copy()
        y, x = cell * (1 + row), cell * (1 + col)
        damaged[y : y + cell, x : x + cell] = 255 - damaged[y : y + cell, x : x + cell]
        assert read_code(damaged) is None


def test_fields_clip_to_their_range_and_round_trip() -> None:
    for stamp, expected in [
        (FrameStamp(70_000, 300, 9_000, -5_000), FrameStamp(70_000 % 65_536, 300 % 256, 8_191, -4_096)),
        (FrameStamp(0, None, -5, 5_000), FrameStamp(0, None, 0, 4_095)),
    ]:
        assert FrameStamp.from_bits(stamp.bits()) == expected


def _opus_round_trip(samples: np.ndarray) -> np.ndarray:
    encoder, decoder = get_encoder(OPUS), get_decoder(OPUS)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    out = []
    for start in range(0, len(pcm) - 960 + 1, 960):
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm[start : start + 960], 2)[None], format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48_000, start, fractions.Fraction(1, 48_000)
        payloads, timestamp = encoder.encode(frame)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                out.append(decoded.to_ndarray().reshape(-1, 2).mean(axis=1) / 32768)
    return np.concatenate(out)


def test_marks_are_found_in_speech_after_opus_at_their_offsets() -> None:
    rate = 48_000
    audio = speech_take(11, 9.0, rate).astype(np.float32)
    assert find_marks(audio, rate) == []  # speech alone holds no mark
    onsets = [round((0.7 + 0.83 * k) * rate) for k in range(10)]
    for number, onset in enumerate(onsets):
        burst = mark_burst(rate, number)
        audio[onset - 2400 : onset + burst.size + 2400] = 0.0
        audio[onset : onset + burst.size] = burst
    found = find_marks(_opus_round_trip(audio), rate)
    assert [mark_id for _, mark_id in found] == [k % MARK_IDS for k in range(10)]  # each names itself
    shift = np.array([onset for onset, _ in found]) - np.array(onsets)
    # Opus delays everything alike (its look-ahead, about 6.5 ms); the marks keep their spacing.
    assert 0 <= np.median(shift) < 0.012 * rate
    assert np.ptp(shift) < 0.002 * rate


def test_the_server_side_listener_numbers_marks_as_they_complete() -> None:
    rate = 16_000
    audio = np.zeros(4 * rate, np.float32)
    onsets = [4_000, 20_000, 36_000]
    for number, onset in zip((5, 6, 7), onsets, strict=True):
        burst = mark_burst(rate, number)
        audio[onset : onset + burst.size] = burst
    listener = MarkListener(rate)
    base = 100_000  # the session's pts axis, wherever the talker started
    for start in range(0, audio.size, 320):
        listener.feed(audio[start : start + 320], base + start)
    assert [mark_id for _, mark_id in listener.marks] == [5, 6, 7]
    assert all(abs(a - (base + b)) <= 16 for (a, _), b in zip(listener.marks, onsets, strict=True))
    assert listener.latest(base + 19_000) == (5, listener.marks[0][0])
    assert listener.latest(base + 50_000) == (7, listener.marks[2][0])
    assert listener.latest(base) is None


def test_the_listener_searches_once_a_mark_in_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks in speech are all found, with one full search for each tone heard (it runs on the
    server's event loop for every talker's every piece)."""
    rate = 16_000
    audio = speech_take(3, 12.0, rate)
    onsets = list(range(rate, audio.size - rate, rate))
    for number, onset in enumerate(onsets):
        audio[onset - 800 : onset + 1_760] = 0.0  # the harness's quiet around a mark
        burst = mark_burst(rate, number)
        audio[onset : onset + burst.size] = burst
    searches = []
    monkeypatch.setattr(stamps, "find_marks", lambda x, r: searches.append(x.size) or find_marks(x, r))
    listener = MarkListener(rate)
    for start in range(0, audio.size, 320):
        listener.feed(audio[start : start + 320], start)
    assert [mark_id for _, mark_id in listener.marks] == [n % 8 for n in range(len(onsets))]
    assert all(abs(a - b) <= 16 for (a, _), b in zip(listener.marks, onsets, strict=True))
    assert len(onsets) <= len(searches) < 2 * len(onsets)  # a few for speech; not one per piece


def test_a_search_pending_when_the_audio_jumps_does_not_hold_back_the_next_mark() -> None:
    rate = 16_000
    listener = MarkListener(rate)
    burst = mark_burst(rate, 3)
    listener.feed(burst[:320], 500_000)  # a tone, then the audio jumps back (a restarted talker)
    audio = np.zeros(rate, np.float32)
    audio[4_000 : 4_000 + burst.size] = burst
    for start in range(0, audio.size, 320):
        listener.feed(audio[start : start + 320], start)
    assert [(abs(at - 4_000) <= 16, mark_id) for at, mark_id in listener.marks] == [(True, 3)]


def test_a_mark_that_begins_while_a_search_is_pending_is_still_found() -> None:
    """A piece of speech that sounds tonal arms a search; a mark whose burst is still sounding when
    that search runs must be searched for again."""
    rate = 16_000
    audio = np.zeros(rate, np.float32)
    audio[:320] = mark_burst(rate, 0)[:320]  # 20 ms of tone: the search runs at sample 2,400
    burst = mark_burst(rate, 5)
    audio[1_440 : 1_440 + burst.size] = burst  # its last 20 ms sound in the search's piece
    listener = MarkListener(rate)
    for start in range(0, audio.size, 320):
        listener.feed(audio[start : start + 320], start)
    assert [(abs(at - 1_440) <= 16, mark_id) for at, mark_id in listener.marks] == [(True, 5)]


def test_the_listener_keeps_only_the_latest_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call of hours hears thousands of marks; what is kept stays bounded (the newest)."""
    monkeypatch.setattr(stamps, "MARKS_KEPT", 2)
    rate = 16_000
    audio = np.zeros(4 * rate, np.float32)
    for number, onset in zip((5, 6, 7), (4_000, 20_000, 36_000), strict=True):
        burst = mark_burst(rate, number)
        audio[onset : onset + burst.size] = burst
    listener = MarkListener(rate)
    for start in range(0, audio.size, 320):
        listener.feed(audio[start : start + 320], start)
    assert [mark_id for _, mark_id in listener.marks] == [6, 7]
    assert listener.latest(50_000) == (7, listener.marks[1][0])
