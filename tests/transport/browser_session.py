"""One browser call against the server, run inside a loopback-only network namespace.

`python -m tests.transport.browser_session --wav SPEECH --out RESULT.json [--screenshot PNG]`:
starts the server (127.0.0.1, loopback ICE only), drives Debian's Chromium with
Playwright (fake microphone playing SPEECH), checks the talker page and then the
viewer link in a second page, and writes what it saw as JSON. The test
(test_browser.py) starts it with `unshare --net`, so neither the browser nor the
server can reach anything but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from playwright.async_api import Page, async_playwright

from engine.config import get_preset
from engine.data import keypoints as kp
from engine.media.image import fit_image
from engine.parts import DEFAULT_BUNDLE, Parts
from engine.streaming.session import SessionOptions
from tests.factories import micro_config
from tests.transport.helpers import running_server
from transport.live import AvatarSession

CHROMIUM = "/usr/lib/chromium/chromium"  # the /usr/bin/chromium wrapper script is not an executable


def chromium_args(wav: Path) -> list[str]:
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


async def video_state(page: Page, selector: str) -> dict:
    return await page.evaluate(
        """(sel) => { const v = document.querySelector(sel);
            const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
            return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
                    frames: q.totalVideoFrames || 0, paused: v.paused, ready: v.readyState}; }""",
        selector,
    )


async def wait_playing(page: Page, selector: str, seconds: float = 2.0, timeout: float = 40.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await video_state(page, selector)
        if state["time"] >= seconds and state["width"] > 0:
            return state
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{selector} did not play {seconds} s within {timeout} s: {state}")


async def region(page: Page, selector: str) -> np.ndarray:
    png = await page.locator(selector).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)


def picture_stats(a: np.ndarray, b: np.ndarray) -> dict:
    return {
        "non_black": float((a.max(axis=2) > 24).mean()),
        "changed": float(np.abs(a - b).mean()),
    }


def mouth_box(live: AvatarSession, element: tuple[float, float]) -> tuple[int, int, int, int]:
    """The mouth of the session's picture, found by its pose head, in the video element's pixels."""
    parts, frame = live.session.parts, live.session._reference_frame  # HR uint8 [H, W, 3]
    lr = parts.config.lr
    small = fit_image(torch.from_numpy(frame).permute(2, 0, 1), lr.width, lr.height)[None]  # as the engine
    with torch.no_grad():
        points, _ = parts.pose(small)
    H, W = frame.shape[:2]
    pixels = kp.to_pixels(points[0], W, H)
    lips = pixels[kp.LIPS]
    eyes = pixels[[kp.index("face", "eye_l"), kp.index("face", "eye_r")]]
    half = float((eyes[0] - eyes[1]).norm()) * 0.6
    centre = lips.mean(0)
    sx, sy = element[0] / W, element[1] / H
    return (
        int((centre[0] - half) * sx), int((centre[1] - half * 0.7) * sy),
        int((centre[0] + half) * sx), int((centre[1] + half * 0.7) * sy),
    )  # fmt: skip


async def mouth_motion(page: Page, live: AvatarSession, seconds: float) -> dict:
    """Frame-to-frame change of the mouth region while the fake microphone speaks and while it is
    silent (the server's VAD, D earlier, says which: that audio is what the shown frame heard)."""
    box = await page.locator("#video").bounding_box()
    assert box is not None
    x0, y0, x1, y1 = mouth_box(live, (box["width"], box["height"]))
    session = live.session
    heard: list[tuple[float, bool]] = []
    samples: list[tuple[float, np.ndarray]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        heard.append((time.monotonic(), session.snapshot().speech))
        crop = (await region(page, "#video"))[y0:y1, x0:x1]
        samples.append((time.monotonic(), crop))
        await asyncio.sleep(0.05)

    def speech_at(t: float) -> bool | None:
        earlier = [s for when, s in heard if when <= t - session.delay]
        return earlier[-1] if earlier else None

    moving: dict[bool, list[float]] = {True: [], False: []}
    for (t0, a), (t1, b) in itertools.pairwise(samples):
        state0, state1 = speech_at(t0), speech_at(t1)
        if state0 is not None and state0 == state1:
            moving[state0].append(float(np.abs(a - b).mean()))
    return {
        "box": [x0, y0, x1, y1],
        "speech_change": float(np.mean(moving[True])) if moving[True] else None,
        "silence_change": float(np.mean(moving[False])) if moving[False] else None,
        "pairs": {"speech": len(moving[True]), "silence": len(moving[False])},
    }


async def run(wav: Path, screenshot: Path | None, preset: str, bundle: Path | None = None) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if preset == "demo":
        parts = Parts.from_bundle(bundle or DEFAULT_BUNDLE)
    else:
        parts = Parts.random(micro_config() if preset == "micro" else get_preset(preset), seed=6)
    result: dict = {}
    options = SessionOptions(target_delay_ms=700)
    async with running_server(parts, session_options=options) as (server, url), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav))
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(url + "/")
            result["title"] = await page.title()
            await page.click("#start")
            result["talker_video"] = await wait_playing(page, "#video")
            first = await region(page, "#video")
            await asyncio.sleep(1.5)
            second = await region(page, "#video")
            result["talker_picture"] = picture_stats(second, first)
            await page.wait_for_function(
                "() => /fps\\s+[0-9]/.test(document.getElementById('stats').textContent)", timeout=15_000
            )
            result["stats_text"] = await page.text_content("#stats")
            result["status"] = await page.text_content("#status")
            result["sessions"] = len(server.sessions.sessions)
            if preset == "demo":
                live = next(iter(server.sessions.sessions.values()))
                result["mouth"] = await mouth_motion(page, live, seconds=12.0)
            if screenshot is not None:
                await page.screenshot(path=str(screenshot))
            link = await page.input_value("#viewer-link")
            result["viewer_link"] = link
            viewer = await browser.new_page(viewport={"width": 1280, "height": 720})
            await viewer.goto(link)
            result["viewer_video"] = await wait_playing(viewer, "#view-video", seconds=1.0)
            first = await region(viewer, "#view-video")
            await asyncio.sleep(1.0)
            second = await region(viewer, "#view-video")
            result["viewer_picture"] = picture_stats(second, first)
            result["viewer_controls_visible"] = await viewer.is_visible("#start")
            live = next(iter(server.sessions.sessions.values()))
            result["peers"] = sorted(p.role for p in live.peers)
            result["audio_pushed_s"] = live.session.snapshot().audio_pushed_s
        finally:
            await browser.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wav", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--preset", default="micro", help="micro, tiny, ... (random weights) or demo")
    parser.add_argument("--bundle", type=Path, help="with --preset demo: this bundle, not the embedded one")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.wav, args.screenshot, args.preset, args.bundle))
    except Exception as err:  # reported to the test, which fails with it
        result = {"error": f"{type(err).__name__}: {err}"}
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
