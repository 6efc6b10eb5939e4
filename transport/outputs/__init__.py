"""Where a live session goes besides WebRTC: a virtual camera, network streams and recordings.

`output_sink(url)` names the sink for a URL (errors before any work for a URL we cannot serve),
`OutputRunner` runs one sink on its own thread with a bounded, dropping queue, and
`SessionOutputs` feeds a session's picture (scaled once) and voice to all of them. No aiortc here:
`ihuman live` needs none.
"""

from __future__ import annotations

from pathlib import Path

from engine.media.errors import MediaError
from engine.media.paths import check_output
from transport.outputs.encoded import FILE_FORMATS, FileSink, SrtSink, StreamSink
from transport.outputs.feed import SessionOutputs
from transport.outputs.runner import OutputRunner
from transport.outputs.sink import OutputError, Sink, StreamFormat
from transport.outputs.vcam import VirtualCameraSink

FORMS = (
    "vcam[:/dev/videoN]",
    "udp://HOST:PORT",
    "tcp://HOST:PORT",
    "rtmp://HOST/APP/KEY",
    "rtsp://HOST:PORT/PATH",
    "srt://HOST:PORT",
    "FILE.mp4 | FILE.mkv",
)

__all__ = [
    "FORMS",
    "OutputError",
    "OutputRunner",
    "SessionOutputs",
    "StreamFormat",
    "output_sink",
    "runners",
    "session_url",
]


def output_sink(url: str, fmt: StreamFormat) -> Sink:
    """The sink for `url`; OutputError with the accepted forms when it names none."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if url == "vcam" or url.startswith("vcam:"):
        return VirtualCameraSink(url, fmt)
    if scheme in ("udp", "tcp"):
        rest = url.split("://", 1)[1].split("?", 1)[0]
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise OutputError(f"{url}: give a host and a port, e.g. {scheme}://127.0.0.1:5000")
        return StreamSink(url, fmt)
    if scheme in ("rtmp", "rtmps", "rtsp"):
        return StreamSink(url, fmt)
    if scheme == "srt":
        return SrtSink(url, fmt)
    if scheme in ("", "file"):
        path = Path(url.removeprefix("file://"))
        if path.suffix.lower() in FILE_FORMATS or path.is_dir():
            try:
                check_output(path, tuple(FILE_FORMATS))
            except MediaError as err:
                raise OutputError(str(err)) from None
            return FileSink(url, fmt)
    raise OutputError(f"unknown output {url!r}; outputs are: {', '.join(FORMS)}")


def is_recording(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def session_url(url: str, session_id: str) -> str:
    """What a server session writes for `url`: a recording gets the session's id in its name, so
    that sessions one after another keep their own files; streams are the URL itself."""
    if not is_recording(url):
        return url
    path = Path(url.removeprefix("file://"))
    return str(path.with_name(f"{path.stem}-{session_id}{path.suffix}"))


def runners(urls: list[str], fmt: StreamFormat) -> list[OutputRunner]:
    """A started runner per URL (a recording is not retried); every URL is checked first."""
    sinks = [output_sink(url, fmt) for url in urls]
    return [OutputRunner(sink, retry=not isinstance(sink, FileSink)).start() for sink in sinks]
