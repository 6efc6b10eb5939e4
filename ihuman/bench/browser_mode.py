"""`ihuman bench latency --mode browser`: the call as a person has it, in Debian's Chromium.

The harness starts `ihuman serve --bench-stamps` on loopback and drives Chromium (Playwright)
with a fake microphone playing the marked speech. A probe injected into the page
(browser_probe.js) records, on the page's clock: the microphone as captured (when each mark left
the talker), every video frame's expected display time with the brightness of its code's cells
(requestVideoFrameCallback), and the audio the page received. The harness reads the codes and
finds the marks with the same code as the webrtc mode, so display time, not decode time, is
what the latency ends at.
"""

from __future__ import annotations

import asyncio
import base64
import math
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from playwright.async_api import async_playwright

from ihuman.bench.calls import MARK_PERIOD_S, call_metrics, marked_speech, served
from ihuman.bench.machine import ProcessUsage
from ihuman.bench.timeline import ReceivedFrame
from transport.stamps import MARK_IDS, find_marks, read_cells

CHROMIUM = "/usr/lib/chromium/chromium"  # the /usr/bin/chromium wrapper script is not an executable
PROBE = Path(__file__).with_name("browser_probe.js")
PLAYING = "() => { const v = document.querySelector('#video'); return v.srcObject && v.readyState > 1; }"
PAGE_RATE = 16_000  # what the probe keeps of the page's audio
WAV_RATE = 48_000


def chromium_args(wav: Path) -> list[str]:
    """Chromium for an unattended call on this machine: fake camera and microphone (playing `wav`),
    WebRTC allowed on loopback, and none of its own traffic to the outside."""
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ]


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes())
    return path


def page_audio_marks(packed: dict) -> list[tuple[float, int]]:
    """(seconds on the page's clock, mark id) of the marks in audio the probe packed."""
    samples = np.frombuffer(base64.b64decode(packed["samples"]), np.float32)
    starts = packed["starts"]  # [[page ms, first sample index], ...] per block
    if not starts:
        return []
    first_index = np.array([index for _, index in starts])
    out = []
    for onset, mark_id in find_marks(samples, PAGE_RATE):
        i = int(np.searchsorted(first_index, onset, side="right")) - 1
        when_ms, index = starts[i]
        out.append((when_ms / 1000 + (onset - index) / PAGE_RATE, mark_id))
    return out


def numbered(marks: Sequence[tuple[float, int]]) -> list[float]:
    """Send times by mark number (n has id n % MARK_IDS), from the marks found in order: a mark
    not found leaves its number at inf (never sent, as far as the matching is concerned)."""
    times: list[float] = []
    for when, mark_id in marks:
        number = len(times) + (mark_id - len(times)) % MARK_IDS
        times += [math.inf] * (number - len(times)) + [when]
    return times


async def run_browser(
    server_arguments: list[str],
    speech16k: np.ndarray,
    seconds: float,
    progress: Callable[[float], None] = lambda _: None,
) -> dict:
    speech = np.interp(np.arange(len(speech16k) * 3) / 3, np.arange(len(speech16k)), speech16k)
    # Long enough that the fake microphone does not loop (it restarts the file at its end).
    samples, _ = marked_speech(speech, WAV_RATE, seconds + 20 * MARK_PERIOD_S)
    with tempfile.TemporaryDirectory() as tmp:
        wav = _write_wav(Path(tmp) / "talker.wav", samples, WAV_RATE)
        async with served(server_arguments) as (url, process, _), async_playwright() as pw:
            usage = ProcessUsage(process.pid)
            usage.start()
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav))
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.add_init_script(path=str(PROBE))
                await page.goto(url + "/")
                await page.click("#start")
                await page.wait_for_function(PLAYING, timeout=120_000)
                await page.evaluate("window.__benchProbe.watch('#video')")
                begun = time.perf_counter()
                while (elapsed := time.perf_counter() - begun) < seconds:
                    progress(elapsed / seconds)
                    await asyncio.sleep(0.25)
                progress(1.0)
                data = await page.evaluate("window.__benchProbe.collect()")
            finally:
                await browser.close()
            cpu, peak = usage.cpu_percent(), usage.peak_rss_mb()
    frames = [ReceivedFrame(shown / 1000, read_cells(means)) for shown, _, means in data["frames"]]
    sent = numbered(page_audio_marks(data["mic"]))
    origin = data["started"] / 1000
    first = frames[0].received if frames else None
    report = call_metrics(frames, sent, page_audio_marks(data["returned"]), origin, first, {})
    report.update(cpu_percent=cpu, peak_rss_mb=peak, browser_received=data["received"])
    return report
