"""The attention kernel's launch settings, chosen by timing them on the shapes the models run.

Block sizes, warps and pipeline stages that are fastest for one shape (a refiner's 14k-token
self-attention) are not for another (a 64-key text cross-attention), and a table written before
the shapes were measured is a guess. So on a GPU the first call of each shape times a few
candidate settings with `triton.testing.do_bench` on its own inputs (and torch's SDPA group by
group, where no key lengths are given) and keeps the fastest for the rest of the process: the
engine's warm-up segments meet every shape a session will, so sessions never pay for it. A
candidate that does not build or launch on this GPU (too much shared memory) is skipped.
IHUMAN_ATTENTION_TUNING=0 keeps the fixed defaults (`triton_fwd.launch_config`). `tuned()` lists
what was chosen and measured, for the benchmark reports.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Config = dict[str, int]

# 16-bit inputs (all that the engine runs on a GPU): the defaults first, then the neighbours
# Triton's own flash-attention tutorial searches on Hopper (BLOCK_M 64/128, BLOCK_N 32-128, 4 or 8
# warps, 2-4 stages).
CANDIDATES_16BIT: tuple[Config, ...] = (
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2},
    {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2},
)

# torch's SDPA, one unmasked call per group (reference.attention_by_group): cuDNN's attention ran
# 1.3-2x faster than the kernel on the paper's full-attention shapes on an H200 (docs/perf.md).
# A candidate only where no key lengths are given (SDPA's fast backends take no mask).
SDPA: Config = {"sdpa": 1}

_chosen: dict[tuple, tuple[Config, dict[str, float]]] = {}
_lock = threading.Lock()  # two stage workers may meet a new shape at once


def enabled() -> bool:
    return os.environ.get("IHUMAN_ATTENTION_TUNING", "1") != "0"


def label(config: Config) -> str:
    if config.get("sdpa"):
        return "sdpa"
    return "m{BLOCK_M}_n{BLOCK_N}_w{num_warps}_s{num_stages}".format(**config)


def choose_config(
    key: tuple, launch: Callable[[Config], object], default: Config, extra: tuple[Config, ...] = ()
) -> Config:
    """The fastest of the candidates and `extra` for `key` (timed once, by calling
    launch(config)), or `default` when tuning is off or nothing else built."""
    if not enabled():
        return default
    known = _chosen.get(key)  # every call after a shape's first: no lock on the hot path
    if known is not None:
        return known[0]
    with _lock:
        if key not in _chosen:
            _chosen[key] = _time_candidates(launch, default, (*CANDIDATES_16BIT, *extra))
        return _chosen[key][0]


def _time_candidates(
    launch: Callable[[Config], object], default: Config, candidates: tuple[Config, ...]
) -> tuple[Config, dict[str, float]]:
    from triton.testing import do_bench  # noqa: PLC0415 (a GPU-only path; the interpreter never tunes)

    times: dict[str, float] = {}
    best, best_ms = default, float("inf")
    for config in candidates:
        try:
            ms = float(do_bench(lambda config=config: launch(config), warmup=5, rep=20))
        except Exception as err:  # out of shared memory or registers on this GPU: not a candidate here
            log.debug("attention config %s skipped: %s", label(config), err)
            continue
        times[label(config)] = ms
        if ms < best_ms:
            best, best_ms = config, ms
    return best, times


def tuned() -> list[dict]:
    """Every shape tuned so far: its key, the chosen settings and each candidate's milliseconds."""
    with _lock:
        return [
            {"key": list(map(str, key)), "chosen": label(config), "ms": times}
            for key, (config, times) in _chosen.items()
        ]


def reset() -> None:
    with _lock:
        _chosen.clear()


def shape_key(q: torch.Tensor, k: torch.Tensor, has_groups: bool, has_kv_lens: bool) -> tuple:
    B, H, Lq, D = q.shape
    return (q.device, q.dtype, B * H, Lq, k.shape[2], D, has_groups, has_kv_lens)
