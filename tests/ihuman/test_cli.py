import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ihuman.cli import main
from tests.transport.helpers import free_port


def test_info_prints_parameter_counts_of_the_paper_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "paper", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["lr_segment_tokens"] == 7040
    assert info["hr_resolution"] == "1280x720"
    for count in info["parameters"].values():
        assert 1.1e9 <= count <= 1.6e9


def test_info_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "preset" in out and "tiny" in out
    assert "parameters.lr_a2v" in out and "parameters.refiner" in out


@pytest.mark.slow
def test_console_script_rejects_unknown_preset() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ihuman", "info", "--preset", "huge"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'huge'" in proc.stderr


@pytest.mark.slow
def test_serve_starts_prints_its_url_and_answers(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ihuman", "serve", "--port", str(port), "--preset", "tiny"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "open http" in line:
                break
        assert f"open http://127.0.0.1:{port}/" in lines[-1], "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--characters", "0", "a count >= 1"), ("--first-character", "-1", "a count >= 0")],
)
def test_eval_lipsync_refuses_an_empty_or_negative_range(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "lipsync", flag, value])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_serve_refuses_a_public_address_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--random-weights"]) == 2
    assert "without --token" in capsys.readouterr().err


def test_eval_and_export_on_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.checkpoint import load_bundle, save_bundle  # noqa: PLC0415
    from engine.models.hand_reward import HandEvaluator  # noqa: PLC0415
    from engine.models.mouth_judge import MouthJudge  # noqa: PLC0415
    from engine.parts import Parts  # noqa: PLC0415
    from tests.factories import micro_config  # noqa: PLC0415

    parts = Parts.random(micro_config(), seed=1)
    modules = {n: getattr(parts, n) for n in ("lr_a2v", "refiner", "vae", "audio", "pose")}
    modules["mouth_judge"] = MouthJudge(parts.config)  # the lip-sync judge travels with the export
    save_bundle(tmp_path / "b", parts.config, {**modules, "hand": HandEvaluator(parts.config)})
    (tmp_path / "b" / "optimizer_vae.safetensors").write_bytes(b"")  # training leftovers stay behind
    (tmp_path / "b" / "eval_vae.json").write_text('{"held_out_psnr_db": 25.0}')
    assert main(["export", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "demo")]) == 0
    exported = load_bundle(tmp_path / "demo")
    assert sorted(exported.parts) == sorted(modules)  # the hand evaluator (training only) stays behind
    assert exported.meta["evaluations"]["eval_vae"]["held_out_psnr_db"] == 25.0
    assert not (tmp_path / "demo" / "optimizer_vae.safetensors").exists()
    assert len(list((tmp_path / "demo" / "avatars").glob("demo-*.png"))) == 4
    assert exported.config == parts.config  # nothing set: the config as trained
    export = ["export", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "tuned")]
    sampling = ["--set", "flow.guidance_audio=3", "--set", "segment.audio_lead_frames=1"]
    assert main([*export, *sampling]) == 0
    tuned = load_bundle(tmp_path / "tuned").config
    assert tuned.flow.guidance_audio == 3 and tuned.segment.audio_lead_frames == 1
    assert tuned.lr_a2v == parts.config.lr_a2v
    capsys.readouterr()
    refused = {
        "lr_a2v.width=64": "not a sampling setting",
        "flow.guidance=3": "not a sampling setting",
        "segment.lr_context_tokens=false": "not a sampling setting",  # a layer of LR-A2V
        "segment.new_latents=4": "not a sampling setting",  # what LR-A2V was trained to make
        "segment.motion_feedback=2": "motion_feedback must be in [0, 1]",
        "flow.guidance_audio=three": "expected a number",
        "flow.guidance_audio=NaN": "expected a number",
        "segment.audio_lead_frames=1.5": "expected a whole number",
        "segment.smooth_joins=1": "expected true or false",
    }
    for item, message in refused.items():
        assert main([*export[:-1], str(tmp_path / "refused"), "--set", item]) == 2, item
        assert message in capsys.readouterr().err, item
    bundle = ["--bundle", str(tmp_path / "demo"), "--device", "cpu"]
    assert (
        main(
            [
                "eval",
                "lipsync",
                *bundle,
                "--characters",
                "1",
                "--seconds",
                "1",
                "--out",
                str(tmp_path / "l.json"),
                "--ceiling",
                "--first-character",
                "1000",
            ]
        )
        == 0
    )
    sync = json.loads((tmp_path / "l.json").read_text())
    assert sync["frames"] == 25 and set(sync["ceiling"]) == {"rendered", "reconstructed"}
    assert sync["reader"] == "judge"
    assert "after the autoencoder" in capsys.readouterr().out
    fidelity = [
        "eval",
        "fidelity",
        *bundle,
        "--characters",
        "1",
        "--seconds",
        "1",
        "--out",
        str(tmp_path / "f.json"),
    ]
    assert main(fidelity) == 0
    report = json.loads((tmp_path / "f.json").read_text())
    assert {"generated_lr", "still_hr", "gain_hr", "smoothness"} <= set(report)
    assert "over the still reference" in capsys.readouterr().out
    plot = tmp_path / "identity.png"
    assert main(["eval", "identity", *bundle, "--seconds", "2", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 1000 and "largest colour deviation" in capsys.readouterr().out


def test_serve_refuses_a_bad_ice_server_before_listening(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["serve", "--port", str(port), "--ice-server", "http://example.invalid"]) == 2
    assert "must start with stun:, turn: or turns:" in capsys.readouterr().err


WEBRTC_STACK = ("aiortc", "aioice", "aiohttp", "msgpack", "uvloop", "prometheus_client")


def _without_webrtc(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`ihuman ARGS` as on a render-only install (`pip install .`): the WebRTC stack's modules are
    set to None in sys.modules, so importing them fails as if they were not installed."""
    code = (
        f"import sys\nfor m in {WEBRTC_STACK!r}: sys.modules[m] = None\n"
        f"from ihuman.cli import main\nsys.exit(main({args!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_render_works_without_the_serve_extra_and_serve_says_what_to_install() -> None:
    render = _without_webrtc(["render", "--help"])
    assert render.returncode == 0 and "--image" in render.stdout, render.stderr[-2000:]
    serve = _without_webrtc(["serve", "--port", "1"])
    assert serve.returncode == 2
    assert "pip install 'infinityhuman[serve]'" in serve.stderr


def test_render_refuses_an_output_it_cannot_write_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clear line and exit 2, no file left (the picture and sound need not even exist:
    the output is checked first)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # As a user without write permission there (the tests may run as root, who has it anywhere).
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    cases = {
        tmp_path / "missing" / "talk.mp4": "the folder",
        tmp_path: "is a folder",
        tmp_path / "talk.avi": "this writes .mp4 or .m4v files",
        locked / "talk.mp4": "no permission",
    }
    for out, message in cases.items():
        code = main(["render", "--image", "none.png", "--audio", "none.wav", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"] and not any(locked.iterdir())
