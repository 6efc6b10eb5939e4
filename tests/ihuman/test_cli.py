import json
import subprocess
import sys

import pytest

from ihuman.cli import main


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
