import json
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


def test_console_script_rejects_unknown_preset() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ihuman", "info", "--preset", "huge"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'huge'" in proc.stderr


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


def test_serve_refuses_a_public_address_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--random-weights"]) == 2
    assert "without --token" in capsys.readouterr().err
