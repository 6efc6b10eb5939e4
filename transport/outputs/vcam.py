"""`vcam[:/dev/videoN]`: the avatar as a camera for call apps, through pyvirtualcam (v4l2loopback
on Linux, the OBS Virtual Camera on Windows and macOS). A camera carries no sound: call apps take
the voice from a microphone, so `ihuman live` delays its voice output to match (docs/obs.md)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from transport.outputs.sink import OutputError, Sink, StreamFormat

LOOPBACK_HINT = (
    "create one with: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
    'card_label="InfinityHuman" (Debian/Ubuntu: apt-get install v4l2loopback-dkms)'
)


class VirtualCameraSink(Sink):
    def __init__(self, url: str, fmt: StreamFormat) -> None:
        super().__init__(url, fmt)
        _, _, device = url.partition(":")
        self.device = device or None
        self._camera: Any = None

    @property
    def takes_audio(self) -> bool:
        return False

    def open(self) -> None:
        try:
            import pyvirtualcam  # noqa: PLC0415 (an optional extra, needed only here)
        except ImportError:
            raise OutputError("vcam needs pyvirtualcam: pip install 'infinityhuman[live]'") from None
        try:
            size = (self.fmt.width, self.fmt.height, self.fmt.fps)
            self._camera = pyvirtualcam.Camera(*size, device=self.device, fmt=pyvirtualcam.PixelFormat.I420)
        except RuntimeError as err:  # pyvirtualcam's word for "no such device / backend"
            hint = LOOPBACK_HINT if sys.platform.startswith("linux") else "start OBS's Virtual Camera once"
            raise OutputError(f"no virtual camera ({err}); {hint}") from None

    def write_video(self, planes: np.ndarray, index: int) -> None:
        assert self._camera is not None, "open() first"
        self._camera.send(np.ascontiguousarray(planes).reshape(-1))

    def write_audio(self, pcm: np.ndarray, index: int) -> None:
        raise OutputError("a virtual camera carries no audio")

    def close(self, complete: bool = True) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()
