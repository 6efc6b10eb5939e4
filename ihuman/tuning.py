"""Session settings by name, `--set key=value`: one table shared by `ihuman serve` and
`ihuman bench` (whose sweeps vary them), each value parsed and checked once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from engine.exceptions import EngineError
from engine.streaming.options import SessionOptions
from ihuman_kernels.dispatch import BACKENDS


def _switch(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def _at_least(minimum: float, kind: Callable[[str], float] = float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value >= minimum:
            raise ValueError(f"expected a value >= {minimum}, got {text}")
        return value

    return parse


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    parse: Callable[[str], object]
    help: str


SETTINGS: dict[str, Setting] = {
    "delay_ms": Setting(_at_least(0), "target delay D (default: from the measured compute)"),
    "lr_steps": Setting(_at_least(1, int), "LR-A2V Euler steps (default: the preset's)"),
    "seed": Setting(int, "generation seed"),
    "degrade": Setting(_switch, "drop quality when frames miss their due time (on|off)"),
    "vad": Setting(_switch, "the model hears only what the VAD calls speech (on|off)"),
    "jitter_ms": Setting(_at_least(0), "margin added to an automatic delay"),
    "audio_grace_ms": Setting(_at_least(0), "how long a segment waits for late audio"),
    "kernels": Setting(one_of(*BACKENDS), "attention/norm/RoPE implementation (auto|triton|reference)"),
}


def parse_settings(items: list[str], known: dict[str, Setting] = SETTINGS) -> dict[str, object]:
    """`key=value` strings -> {key: parsed value}; EngineError names a bad key or value."""
    values: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise EngineError(f"--set {item!r}: expected key=value")
        if key not in known:
            raise EngineError(f"--set {key}: unknown setting; known: {', '.join(sorted(known))}")
        try:
            values[key] = known[key].parse(text)
        except ValueError as err:
            raise EngineError(f"--set {key}: {err}") from None
    return values


def session_options(values: dict[str, object], base: SessionOptions | None = None) -> SessionOptions:
    """SessionOptions with the session settings among `values` applied (others are ignored)."""
    options = base or SessionOptions()
    fields = {k: values[k] for k in ("degrade", "vad", "jitter_ms", "audio_grace_ms") if k in values}
    if "delay_ms" in values:
        fields["target_delay_ms"] = values["delay_ms"]
    choices = {k: values[k] for k in ("lr_steps", "seed") if k in values}
    if choices:
        fields["generation"] = dataclasses.replace(options.generation, **choices)
    return dataclasses.replace(options, **fields)


def apply_process_settings(values: dict[str, object]) -> None:
    """Settings that belong to the process rather than a session (the kernel backend)."""
    if "kernels" in values:
        os.environ["IHUMAN_KERNELS"] = str(values["kernels"])
