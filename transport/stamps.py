"""Content marks for measuring a call from the outside: tone bursts in the talker's audio, a visual
code on every frame. Used by `ihuman bench` and by `ihuman serve --bench-stamps`.

Glass-to-glass latency is measured on the client's clock only: the client puts short tone bursts
(marks) into the audio it sends and notes when each left; the server, hearing them, stamps every
frame with a code saying which mark its audio came after and how far after. The client reads the
code off the decoded frame and knows which of its own samples the frame waited for, so no clock
of the server's enters the number. The returned audio carries the same marks back, which gives
the A/V offset as received (the flash-and-beep idea of sync test generators).

The code is an 8 x 8 grid of black and white cells in the top-left corner, a cell one 16-pixel
macroblock (more on frames over 1280 lines), protected by a CRC-8:
large, flat, high-contrast blocks survive VP8 and H.264 at the bitrates WebRTC sends, and a
damaged code is rejected rather than misread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

# Mark k is a burst of tone k % 8: a mark names itself (modulo 8), so a mark the server misses or
# hears late does not shift the numbering of the rest. 200 Hz apart: the 10 ms analysis window has
# its nulls at multiples of 100 Hz, so each tone is blind to the others.
MARK_TONES_HZ = (800.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0, 2000.0, 2200.0)
MARK_IDS = len(MARK_TONES_HZ)
MARK_SECONDS = 0.06
MARK_LEVEL = 0.5
MARK_GAP_SECONDS = 0.3  # marks closer than this are one mark
MARKS_KEPT = 256
GRID = 8
BLACK, WHITE = 16, 235  # limited-range luma, what encoders expect
_FRAME_BITS, _MARK_BITS, _OFFSET_BITS = 16, 8, 13


# ----- tone marks ---------------------------------------------------------------------------------
def mark_burst(rate: int, number: int = 0) -> np.ndarray:
    """Mark `number`: MARK_SECONDS of its tone with 1 ms fades (no click, a sharp onset)."""
    n = round(MARK_SECONDS * rate)
    burst = MARK_LEVEL * np.sin(2 * np.pi * MARK_TONES_HZ[number % MARK_IDS] * np.arange(n) / rate)
    fade = max(1, rate // 1000)
    ramp = np.linspace(0.0, 1.0, fade)
    burst[:fade] *= ramp
    burst[-fade:] *= ramp[::-1]
    return burst.astype(np.float32)


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` samples (zero beyond the ends), by a running sum: the
    server runs this on every 20 ms of every talker's audio."""
    total = np.concatenate([[0.0], np.cumsum(x)])
    left = np.arange(x.size) - width // 2
    lo, hi = np.clip(left, 0, x.size), np.clip(left + width, 0, x.size)
    return (total[hi] - total[lo]) / width


def find_marks(samples: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """(onset sample, mark id) of the tone marks in mono `samples`, onsets to about a millisecond.

    A mark is where a 10 ms window is dominated by one mark tone (its amplitude near the window's
    own RMS x sqrt 2, as for a pure sine) and loud; its onset is where the demodulated amplitude
    reaches half the burst's level, which a centred window puts at the true step.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return []
    width = max(1, round(0.01 * rate))
    rms = np.sqrt(np.maximum(_moving_mean(x * x, width), 1e-12))
    t = np.arange(x.size) / rate
    found: list[tuple[int, int]] = []
    for mark_id, hz in enumerate(MARK_TONES_HZ):
        phase = 2 * np.pi * hz * t
        amplitude = 2 * np.hypot(
            _moving_mean(x * np.cos(phase), width), _moving_mean(x * np.sin(phase), width)
        )
        tonal = (amplitude > 0.3 * MARK_LEVEL) & (amplitude > 0.8 * np.sqrt(2) * rms)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], tonal.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start < 0.5 * MARK_SECONDS * rate:
                continue
            level = float(np.median(amplitude[start:stop]))
            begin = max(0, start - width)
            found.append((begin + int(np.argmax(amplitude[begin:stop] >= level / 2)), mark_id))
    marks: list[tuple[int, int]] = []
    for onset, mark_id in sorted(found):
        if not marks or onset - marks[-1][0] > MARK_GAP_SECONDS * rate:
            marks.append((onset, mark_id))
    return marks


def _sounds_tonal(pcm: np.ndarray, rate: int) -> bool:
    """A cheap test of one piece: does a mark tone hold a large share of its energy? Only then is
    the full search run (speech seldom passes; a mark always does)."""
    spectrum = np.abs(np.fft.rfft(pcm)) ** 2
    total = spectrum.sum()
    if total <= 1e-9:
        return False
    bins = [round(hz * pcm.size / rate) for hz in MARK_TONES_HZ]
    near = [spectrum[max(0, b - 1) : b + 2].sum() for b in bins if b < spectrum.size]
    return bool(near) and max(near) > 0.3 * total


class MarkListener:
    """The marks in a stream of audio pieces on the session's pts axis, as they arrive.

    Keeps the last few hundred milliseconds; a mark counts once its whole burst is in (so its onset
    is exact). The full search runs once after a piece sounds tonal, when the burst that piece may
    open has had time to end: it costs milliseconds on the server's event loop for every talker,
    and running it with every piece while a tone lasts took a fifth of that loop's time with two
    talkers (docs/latency-harness.md).
    """

    def __init__(self, rate: int, keep_seconds: float = 0.25) -> None:
        self.rate = rate
        self._keep = round(keep_seconds * rate)
        self._buffer = np.zeros(0, np.float32)
        self._start = 0  # pts of _buffer[0]
        self._search_at: int | None = None  # pts at which the buffer is searched (a tone was heard)
        # (onset pts, mark id) of the marks heard, in order: the last MARKS_KEPT (over a minute at the
        # gap's minimum), far more than a frame's audio lags its mark, and no growth over a long call.
        self.marks: deque[tuple[int, int]] = deque(maxlen=MARKS_KEPT)

    def feed(self, pcm: np.ndarray, pts: int) -> None:
        if pts != self._start + self._buffer.size:  # a gap: what came before is no longer adjacent
            self._buffer, self._start, self._search_at = np.zeros(0, np.float32), pts, None
        self._buffer = np.concatenate([self._buffer, pcm.astype(np.float32)])
        end = self._start + self._buffer.size
        if self._search_at is not None and end >= self._search_at:
            self._search_at = None
            self._search()
        # After the search: a burst it found incomplete (one that began while a search was pending,
        # after a tonal piece of speech) sounds in this very piece, which arms the next search.
        if self._search_at is None and pcm.size and _sounds_tonal(pcm, self.rate):
            # A burst that this piece opens (or the one before it, too briefly to sound tonal) ends
            # within MARK_SECONDS of it, and _search counts it 20 ms after that; the kept audio
            # (`keep_seconds`) still holds its start then.
            self._search_at = end + round((MARK_SECONDS + 0.07) * self.rate)
        drop = max(0, self._buffer.size - self._keep)
        self._buffer, self._start = self._buffer[drop:], self._start + drop

    def _search(self) -> None:
        complete = self._buffer.size - round((MARK_SECONDS + 0.02) * self.rate)
        for onset, mark_id in find_marks(self._buffer, self.rate):
            at = self._start + onset
            if onset <= complete and (
                not self.marks or at - self.marks[-1][0] > MARK_GAP_SECONDS * self.rate
            ):
                self.marks.append((at, mark_id))

    def latest(self, stop: int) -> tuple[int, int] | None:
        """(mark id, onset pts) of the last mark heard with its onset before sample `stop`."""
        for onset, mark_id in reversed(self.marks):
            if onset < stop:
                return mark_id, onset
        return None


# ----- the frame code -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameStamp:
    """What the server says about a frame: its number, and where its audio ends and where the
    frame itself sits relative to the last mark its audio contains (milliseconds)."""

    frame: int  # video pts modulo 2**16
    mark: int | None = None  # the mark's id, its number modulo MARK_IDS (None: no mark heard yet)
    end_ms: int = 0  # the frame's audio window ends this long after the mark's onset (0..8191)
    center_ms: int = 0  # the frame's own time relative to the onset (-4096..4095)

    def bits(self) -> list[int]:
        fields = [
            (self.frame % 2**_FRAME_BITS, _FRAME_BITS),
            (int(self.mark is not None), 1),
            ((self.mark or 0) % 2**_MARK_BITS, _MARK_BITS),
            (min(max(self.end_ms, 0), 2**_OFFSET_BITS - 1), _OFFSET_BITS),
            (min(max(self.center_ms, -(2**12)), 2**12 - 1) % 2**_OFFSET_BITS, _OFFSET_BITS),
        ]
        payload = [(value >> i) & 1 for value, width in fields for i in range(width - 1, -1, -1)]
        crc = _crc8(payload)
        bits = payload + [(crc >> i) & 1 for i in range(7, -1, -1)]
        return bits + [0] * (GRID * GRID - len(bits))

    @classmethod
    def from_bits(cls, bits: list[int]) -> FrameStamp | None:
        payload_size = _FRAME_BITS + 1 + _MARK_BITS + 2 * _OFFSET_BITS
        payload = bits[:payload_size]
        crc = int("".join(map(str, bits[payload_size : payload_size + 8])), 2)
        if crc != _crc8(payload) or any(bits[payload_size + 8 :]):
            return None
        values, at = [], 0
        for width in (_FRAME_BITS, 1, _MARK_BITS, _OFFSET_BITS, _OFFSET_BITS):
            values.append(int("".join(map(str, payload[at : at + width])), 2))
            at += width
        frame, has_mark, mark, end_ms, center = values
        center_ms = center - 2**_OFFSET_BITS if center >= 2**12 else center
        return cls(frame, mark if has_mark else None, end_ms, center_ms)


def _crc8(bits: list[int]) -> int:
    """CRC-8 (polynomial 0x07) of a bit sequence."""
    crc = 0
    for bit in bits:
        top = ((crc >> 7) & 1) ^ bit
        crc = ((crc << 1) & 0xFF) ^ (0x07 if top else 0)
    return crc


def cell_size(height: int) -> int:
    """About 1/40 of the height, at least and in whole 16-pixel macroblocks: an encoder decides
    per macroblock whether to code it or keep the previous frame's (VP8's temporal denoiser does,
    with aiortc's settings), so a cell must be a macroblock of its own: with 8-pixel cells,
    Chromium showed 22 % of frames with clean but stale cells (codes the CRC rejected)."""
    return max(16, height // 40 // 16 * 16)


def draw_code(luma: np.ndarray, stamp: FrameStamp) -> None:
    """Draw `stamp` into a luma plane [H, W] (uint8, in place), one cell in from the corner."""
    cell = cell_size(luma.shape[0])
    grid = np.array(stamp.bits(), np.uint8).reshape(GRID, GRID)
    # A black quiet zone one cell wide keeps the picture's edges out of the outer cells.
    luma[: (GRID + 2) * cell, : (GRID + 2) * cell] = BLACK
    cells = np.where(grid == 1, WHITE, BLACK).astype(np.uint8)
    luma[cell : (GRID + 1) * cell, cell : (GRID + 1) * cell] = np.kron(cells, np.ones((cell, cell), np.uint8))


def code_region(height: int) -> int:
    """Side in pixels of the corner square the code (with its quiet zone) covers."""
    return (GRID + 2) * cell_size(height)


def read_code(luma: np.ndarray) -> FrameStamp | None:
    """The stamp in a decoded luma plane, or None where there is none or it is damaged."""
    cell = cell_size(luma.shape[0])
    inner = slice(cell // 4, cell - cell // 4)
    area = luma[cell : (GRID + 1) * cell, cell : (GRID + 1) * cell].astype(np.float32)
    if area.shape != (GRID * cell, GRID * cell):
        return None
    blocks = area.reshape(GRID, cell, GRID, cell)[:, inner, :, inner].mean(axis=(1, 3))
    return read_cells(blocks.ravel().tolist(), (BLACK + WHITE) / 2)


def read_cells(means: list[float], threshold: float = 127.5) -> FrameStamp | None:
    """The stamp from the 64 cells' mean brightness, row by row (what a browser page measures on
    its canvas, in full-range RGB: hence the default threshold)."""
    if len(means) != GRID * GRID:
        return None
    return FrameStamp.from_bits([int(m > threshold) for m in means])


def stamp_yuv420p(image: np.ndarray, stamp: FrameStamp) -> None:
    """Draw `stamp` into a yuv420p frame as `av.VideoFrame.to_ndarray()` lays it out ([H * 3 / 2, W]:
    Y, then U and V each [H / 2, W / 2]), with neutral chroma under the code (in place)."""
    height, width = image.shape[0] * 2 // 3, image.shape[1]
    draw_code(image[:height], stamp)
    side = code_region(height) // 2 + 1
    for plane in (image[height : height + height // 4], image[height + height // 4 :]):
        plane.reshape(height // 2, width // 2)[:side, :side] = 128
