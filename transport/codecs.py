"""Video codec choices: H.264 first, with x264 at a fast low-latency preset.

aiortc opens x264 with its default preset (medium), 21-27 ms per 720p frame
on our CPUs; `veryfast` takes 6-8 ms.
aiortc has no option for it, so its H.264 sender is given an encoder whose
codec context we open ourselves, with the same settings plus the preset.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterator

import aiortc.codecs
import aiortc.rtcrtpsender
import av
from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder

X264_PRESET = "veryfast"
PREFERRED = ("video/H264", "video/VP8")


class LowLatencyH264Encoder(H264Encoder):
    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        if self.codec is None or (self.codec.width, self.codec.height) != (frame.width, frame.height):
            # Opened here (aiortc's own method would open it with the default preset); the
            # parent keeps using it as long as size and bitrate stay.
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height = frame.width, frame.height
            codec.bit_rate = self.target_bitrate
            codec.pix_fmt = "yuv420p"
            codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
            codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
            codec.options = {"level": "31", "tune": "zerolatency", "preset": X264_PRESET}
            codec.profile = "Baseline"
            self.buffer_data, self.buffer_pts = b"", None
            self.codec = codec
        yield from super()._encode_frame(frame, force_keyframe)


_aiortc_get_encoder = aiortc.codecs.get_encoder


def _get_encoder(codec: aiortc.codecs.RTCRtpCodecParameters) -> object:
    if codec.mimeType.lower() == "video/h264":
        return LowLatencyH264Encoder()
    return _aiortc_get_encoder(codec)


def install() -> None:
    """Make aiortc's senders use LowLatencyH264Encoder (process-wide; idempotent)."""
    aiortc.rtcrtpsender.get_encoder = _get_encoder


def prefer_codecs(transceiver: RTCRtpTransceiver) -> None:
    """H.264, then VP8 (with their retransmission codecs), for a video transceiver."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in PREFERRED for c in codecs if c.mimeType == mime]
    ordered += [c for c in codecs if c.mimeType == "video/rtx"]
    transceiver.setCodecPreferences(ordered)
