"""The fused norm + modulation and RoPE kernels (interpreter on CPU) against their references."""

from __future__ import annotations

import pytest
import torch

from ihuman_kernels import (
    KernelError,
    apply_rope,
    apply_rope_reference,
    rms_norm_modulate,
    rms_norm_modulate_reference,
)
from ihuman_kernels.norm import rms_norm_modulate_triton
from ihuman_kernels.rope import apply_rope_triton

TOLERANCE = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 1.6e-2},  # ~1 ulp: fp32 -> bf16 stores truncate
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 5, 48, False), (1, 1, 7, 100, True), (1, 4, 1, 64, True)],
)
def test_norm_modulate_matches_reference(shape: tuple[int, int, int, int, bool], dtype: torch.dtype) -> None:
    B, frames, tokens, W, affine = shape
    g = torch.Generator().manual_seed(B * 100 + W)
    x = (torch.randn(B, frames * tokens, W, generator=g) * 3 + 1).to(dtype)
    shift, scale = (torch.randn(B, frames, W, generator=g).to(dtype) for _ in range(2))
    weight = torch.randn(W, generator=g).to(dtype) if affine else None
    out = torch.full_like(x, float("nan"))
    rms_norm_modulate_triton(x, shift, scale, weight, 1e-6, out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(
        out.float(), rms_norm_modulate_reference(x, shift, scale, weight).float(), **TOLERANCE[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 2, 37, 32), (2, 1, 5, 64), (1, 3, 20, 128)])
def test_rope_matches_reference(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    B, H, L, D = shape
    g = torch.Generator().manual_seed(L * D)
    x = torch.randn(B, L, H, D, generator=g).to(dtype).transpose(1, 2)  # the models' strided view
    angles = torch.rand(L, D // 2, generator=g) * 6.28
    cos, sin = angles.cos(), angles.sin()
    out = torch.full((B, H, L, D), float("nan"), dtype=dtype)
    apply_rope_triton(x, cos, sin, out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), apply_rope_reference(x, cos, sin).float(), **TOLERANCE[dtype])


def test_bad_input_is_refused_clearly() -> None:
    x = torch.randn(1, 6, 8)
    with pytest.raises(KernelError, match="do not split into 4 frames"):
        rms_norm_modulate(x, torch.randn(1, 4, 8), torch.randn(1, 4, 8), backend="triton")
    with pytest.raises(KernelError, match=r"shift/scale must be \[B=1, F, W=8\]"):
        rms_norm_modulate(x, torch.randn(1, 2, 7), torch.randn(1, 2, 7), backend="triton")
    with pytest.raises(KernelError, match="cos/sin must be"):
        apply_rope(torch.randn(1, 2, 5, 32), torch.randn(5, 15), torch.randn(5, 15), backend="triton")
    with pytest.raises(KernelError, match="power of two"):
        apply_rope(torch.randn(1, 2, 5, 24), torch.randn(5, 12), torch.randn(5, 12), backend="triton")


def test_gradients_flow_through_the_reference() -> None:
    x = torch.randn(1, 4, 16, requires_grad=True)
    shift, scale = torch.zeros(1, 2, 16), torch.zeros(1, 2, 16)
    rms_norm_modulate(x, shift, scale, backend="triton").sum().backward()
    assert x.grad is not None
