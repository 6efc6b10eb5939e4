"""The Triton attention forward (run by Triton's interpreter on CPU) against the SDPA reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from ihuman_kernels import KernelError, attention, attention_by_group, attention_reference
from ihuman_kernels.attention import _group_ends, tuning
from ihuman_kernels.attention.triton_fwd import attention_triton, launch

TOLERANCE = {
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},  # ~1 ulp: fp32 -> bf16 stores truncate
}
GPU_TOLERANCE = {**TOLERANCE, torch.float32: {"atol": 5e-3, "rtol": 5e-3}}  # tl.dot runs in TF32

# (B, H, Lq, Lk, D, groups, kv_lens): lengths off the 16-token blocks, Lq != Lk, every mask kind.
CASES = [
    (1, 2, 37, 37, 32, None, None),  # full self-attention, ragged tail
    (2, 2, 45, 45, 64, (7, 13, 25), None),  # block-causal [prefix | motion | new]
    (1, 3, 50, 50, 128, (10, 40), None),  # two groups, D = 128
    (2, 1, 33, 19, 16, None, (5, 19)),  # cross-attention, padded keys
    (1, 2, 70, 9, 64, None, (9,)),  # audio-like: many queries, few keys
    (2, 2, 29, 29, 32, (1, 4, 24), (29, 17)),  # groups with a 1-token group and key lengths
    (1, 1, 1, 40, 64, None, None),  # one query
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _inputs(case: tuple, dtype: torch.dtype, device: str = "cpu", seed: int = 0) -> tuple:
    B, H, Lq, Lk, D, groups, lens = case
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g).to(device, dtype) for n in (Lq, Lk, Lk))
    kv_lens = torch.tensor(lens, device=device) if lens is not None else None
    return q, k, v, groups, kv_lens


def _reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: tuple | None, kv_lens: torch.Tensor | None
) -> torch.Tensor:
    return attention_reference(q.double(), k.double(), v.double(), groups, kv_lens)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c[2]}x{c[3]}-D{c[4]}-g{c[5]}-k{c[6]}")
def test_kernel_matches_reference_and_writes_every_element(case: tuple, dtype: torch.dtype) -> None:
    q, k, v, groups, kv_lens = _inputs(case, dtype, seed=CASES.index(case))
    out = torch.full_like(q, float("nan"))  # poisoned: any element left unwritten stays NaN
    ends = _group_ends(tuple(groups), q.device) if groups else None
    attention_triton(q, k, v, ends, kv_lens.to(torch.int32) if kv_lens is not None else None, out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), _reference(q, k, v, groups, kv_lens), **TOLERANCE[dtype])


def test_strided_views_need_no_copy() -> None:
    """q/k/v as the models hold them: [B, L, H, D] transposed to [B, H, L, D]."""
    B, L, H, D = 2, 23, 3, 32
    q, k, v = (torch.randn(B, L, H, D).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    out = attention(q, k, v, groups=(5, 18), backend="triton")
    torch.testing.assert_close(out.double(), _reference(q, k, v, (5, 18), None), **TOLERANCE[torch.float32])


def test_context_rows_never_see_the_new_tokens() -> None:
    """Block-causal: changing the new group's keys/values leaves the context rows' output unchanged."""
    q, k, v, _, _ = _inputs((1, 2, 40, 40, 32, None, None), torch.float32)
    groups = (8, 12, 20)
    a = attention(q, k, v, groups=groups, backend="triton")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 20:] += 1.0
    v2[:, :, 20:] -= 1.0
    b = attention(q, k2, v2, groups=groups, backend="triton")
    assert torch.equal(a[:, :, :20], b[:, :, :20]) and not torch.equal(a[:, :, 20:], b[:, :, 20:])


def test_training_falls_back_to_sdpa_autograd() -> None:
    q, k, v = (torch.randn(1, 2, 20, 32, requires_grad=True) for _ in range(3))
    out = attention(q, k, v, groups=(4, 16), backend="triton")
    out.square().sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


@pytest.mark.parametrize(
    ("shapes", "kwargs", "message"),
    [
        (((2, 5, 32), (2, 5, 32), (2, 5, 32)), {}, "must be \\[B, H, L, D\\]"),
        (((1, 2, 5, 32), (1, 3, 5, 32), (1, 3, 5, 32)), {}, "batch and heads must match"),
        (((1, 2, 5, 32), (1, 2, 5, 16), (1, 2, 5, 16)), {}, "head dims differ"),
        (((1, 2, 5, 48), (1, 2, 5, 48), (1, 2, 5, 48)), {}, "head dim 48 has no kernel"),
        (((1, 2, 5, 32), (1, 2, 5, 32), (1, 2, 5, 32)), {"groups": (2, 2)}, "cover 4 tokens"),
        (((1, 2, 5, 32), (1, 2, 5, 32), (1, 2, 5, 32)), {"kv_lens": torch.tensor([9])}, "kv_lens must lie"),
        (((1, 2, 5, 32), (1, 2, 5, 32), (1, 2, 5, 32)), {"backend": "cuda"}, "kernel backend"),
    ],
)
def test_bad_input_is_refused_clearly(shapes: tuple, kwargs: dict, message: str) -> None:
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(KernelError, match=message):
        attention(q, k, v, **{"backend": "triton", **kwargs})


def test_non_contiguous_last_axis_is_refused() -> None:
    q = torch.randn(1, 2, 32, 5).transpose(2, 3)  # [1, 2, 5, 32] with stride 5 on the last axis
    with pytest.raises(KernelError, match="last axis must be contiguous"):
        attention(q, q, q, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c[2]}x{c[3]}-D{c[4]}-g{c[5]}-k{c[6]}")
def test_kernel_on_the_gpu(case: tuple, dtype: torch.dtype) -> None:
    q, k, v, groups, kv_lens = _inputs(case, dtype, device="cuda")
    out = attention(q, k, v, groups=groups, kv_lens=kv_lens, backend="triton")
    torch.testing.assert_close(out.double(), _reference(q, k, v, groups, kv_lens), **GPU_TOLERANCE[dtype])


def _case_id(case: tuple) -> str:
    return f"L{case[2]}x{case[3]}-D{case[4]}-g{case[5]}-k{case[6]}"


@pytest.mark.parametrize("case", [c for c in CASES if c[6] is None], ids=_case_id)
def test_sdpa_group_by_group_is_the_block_causal_attention(case: tuple) -> None:
    """The tuner's SDPA candidate: one unmasked call per group over the keys up to its end."""
    q, k, v, groups, _ = _inputs(case, torch.float32)
    out = torch.full_like(q, float("nan"))
    ends = list(itertools.accumulate(groups)) if groups else None
    attention_by_group(q, k, v, ends, out)
    torch.testing.assert_close(out.double(), _reference(q, k, v, groups, None), **TOLERANCE[torch.float32])


GPU_CANDIDATES = [
    (case, config)
    for case in CASES[1:4]
    for config in (*tuning.CANDIDATES_16BIT, tuning.SDPA)
    if case[6] is None or config is not tuning.SDPA  # SDPA runs only calls without key lengths
]


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("case", "config"), GPU_CANDIDATES, ids=[f"{_case_id(c)}-{tuning.label(k)}" for c, k in GPU_CANDIDATES]
)
def test_every_tuning_candidate_computes_attention(case: tuple, config: dict) -> None:
    """Whichever settings the tuner keeps, the kernel's result is the same."""
    q, k, v, groups, kv_lens = _inputs(case, torch.bfloat16, device="cuda")
    ends = _group_ends(tuple(groups), q.device) if groups else None
    host_ends = list(itertools.accumulate(groups)) if groups else None
    out = torch.full_like(q, float("nan"))
    lens = kv_lens.to(torch.int32) if kv_lens is not None else None
    launch(q, k, v, ends, lens, out, config, group_ends=host_ends)
    torch.testing.assert_close(
        out.double(), _reference(q, k, v, groups, kv_lens), **GPU_TOLERANCE[torch.bfloat16]
    )


@pytest.mark.gpu
def test_a_shape_is_tuned_once_and_the_choice_reported() -> None:
    tuning.reset()
    q, k, v, groups, _ = _inputs(CASES[1], torch.bfloat16, device="cuda")
    for _ in range(2):
        out = attention(q, k, v, groups=groups, backend="triton")
    torch.testing.assert_close(
        out.double(), _reference(q, k, v, groups, None), **GPU_TOLERANCE[torch.bfloat16]
    )
    (entry,) = tuning.tuned()
    assert entry["chosen"] in entry["ms"]
    assert len(entry["ms"]) >= 2  # the default and at least one alternative built on this GPU
