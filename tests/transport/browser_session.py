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
import base64
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

from engine.checkpoint import load_bundle
from engine.media.image import cover, fit_image
from engine.models.mouth_judge import MouthJudge
from engine.parts import DEFAULT_BUNDLE, Parts
from engine.presets import get_preset
from engine.streaming.session import SessionOptions
from ihuman.bench.browser_mode import CHROMIUM, chromium_args
from ihuman.commands.serve import DEFAULT_AVATAR_SEED
from tests.factories import micro_config
from tests.transport.helpers import running_server
from transport.session import AvatarSession

STATE_MARGIN_S = 0.4  # samples this close to a speech/silence change count for neither


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


async def video_frame(page: Page, selector: str, width: int, height: int) -> np.ndarray:
    """The frame the video element shows, drawn at width x height in the page: uint8 [H, W, 3].

    Much faster than a screenshot (tens of ms, not hundreds), so a test can sample the picture
    several times a second."""
    url = await page.evaluate(
        """([sel, w, h]) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
            const g = c.getContext('2d'); g.imageSmoothingQuality = 'high';
            g.drawImage(document.querySelector(sel), 0, 0, w, h); return c.toDataURL('image/png'); }""",
        [selector, width, height],
    )
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def picture_stats(a: np.ndarray, b: np.ndarray) -> dict:
    return {
        "non_black": float((a.max(axis=2) > 24).mean()),
        "changed": float(np.abs(a - b).mean()),
    }


async def likeness(page: Page, selector: str, live: AvatarSession) -> float:
    """How much the frame the page shows looks like the session's picture: the correlation of their
    grey levels, drawn at the HR size (1: the same picture; the blocky colour noise of a generator
    that has not learnt the person reads near 0)."""
    reference = live.session.reference_frame  # HR uint8 [H, W, 3]
    H, W = reference.shape[:2]
    shown = (await video_frame(page, selector, W, H)).astype(np.float64).mean(axis=2)
    return float(np.corrcoef(shown.ravel(), reference.astype(np.float64).mean(axis=2).ravel())[0, 1])


def picture_points(live: AvatarSession) -> torch.Tensor:
    """The pose head's keypoints [1, K, 2] of the session's picture, at the LR size as the engine sees it."""
    parts, frame = live.session.parts, live.session.reference_frame  # HR uint8 [H, W, 3]
    lr = parts.config.lr
    small = fit_image(torch.from_numpy(frame).permute(2, 0, 1), lr.width, lr.height)[None]
    with torch.no_grad():
        return parts.pose(small)[0]


def mouth_openings(live: AvatarSession, frames: list[np.ndarray], judge: MouthJudge) -> np.ndarray:
    """The mouth opening (0 closed, 1 wide) the bundle's mouth judge (which no training loss reads)
    sees on each shown HR-size frame, read as `ihuman eval lipsync` reads generated frames: at the
    LR size, around the lips of the picture (the avatar stands roughly where its picture does)."""
    parts = live.session.parts
    lr = parts.config.lr
    small = cover(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2) / 255.0, lr.width, lr.height)
    points = picture_points(live).expand(len(frames), -1, -1)
    with torch.no_grad():
        return judge.read(small, points).clamp(0, 1).numpy()


async def mouth_motion(page: Page, live: AvatarSession, judge: MouthJudge, seconds: float) -> dict:
    """The mouth opening shown while the fake microphone speaks and while it is silent (the server's
    VAD, the session's delay earlier, says which: that audio is what the shown frame heard)."""
    session = live.session
    H, W = session.reference_frame.shape[:2]
    heard: list[tuple[float, bool]] = []
    shots: list[tuple[float, np.ndarray]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        heard.append((time.monotonic(), session.snapshot().speech))
        # Drawn at the HR size: undoes the track's stretch of the HR frame to 1280x720.
        shots.append((time.monotonic(), await video_frame(page, "#video", W, H)))
        await asyncio.sleep(0.02)

    def speech_at(t: float) -> bool | None:
        """What the VAD said of the audio the frame shown at t heard; None near a change (the VAD's
        hangover, the browser's playout buffer and the sampling make the edge uncertain)."""
        heard_at = t - session.delay
        around = [s for when, s in heard if abs(when - heard_at) <= STATE_MARGIN_S]
        return around[0] if around and len(set(around)) == 1 else None

    openings = mouth_openings(live, [shot for _, shot in shots], judge)
    states = [speech_at(t) for t, _ in shots]

    def summary(state: bool) -> dict | None:
        values = [float(o) for o, s in zip(openings, states, strict=True) if s is state]
        steps = [
            abs(float(b - a))
            for (a, sa), (b, sb) in itertools.pairwise(zip(openings, states, strict=True))
            if sa is state and sb is state
        ]
        if not values:
            return None
        return {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "change": float(np.mean(steps)) if steps else None,  # between consecutive samples
            "samples": len(values),
        }

    return {"speech": summary(True), "silence": summary(False), "samples": len(shots)}


async def run(wav: Path, screenshot: Path | None, preset: str, bundle: Path | None = None) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if preset == "demo":  # the model and default picture `make run` serves (a held-out character)
        parts, picture_seed = Parts.from_bundle(bundle or DEFAULT_BUNDLE), DEFAULT_AVATAR_SEED
    else:
        config = micro_config() if preset == "micro" else get_preset(preset)
        parts, picture_seed = Parts.random(config, seed=6), 5
    result: dict = {}
    options = SessionOptions(target_delay_ms=700)
    server_context = running_server(parts, picture_seed, session_options=options)
    async with server_context as (server, url), async_playwright() as pw:
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
            live = next(iter(server.sessions.sessions.values()))
            result["talker_likeness"] = await likeness(page, "#video", live)
            if preset == "demo":
                judge = load_bundle(bundle or DEFAULT_BUNDLE, ("mouth_judge",)).parts["mouth_judge"].eval()
                result["mouth"] = await mouth_motion(page, live, judge, seconds=9.0)
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
            result["viewer_likeness"] = await likeness(viewer, "#view-video", live)
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
    parser.add_argument("--preset", default="demo", help="demo (the bundle) or micro, tiny, ...")
    parser.add_argument("--bundle", type=Path, help="with --preset demo: this bundle, not the embedded one")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.wav, args.screenshot, args.preset, args.bundle))
    except Exception as err:  # reported to the test, which fails with it
        result = {"error": f"{type(err).__name__}: {err}"}
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
