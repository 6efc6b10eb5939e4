"""Which implementation an op runs: the Triton kernel or its plain-torch reference.

`auto` (the default) picks Triton for CUDA tensors when triton imports, the
reference otherwise. The environment variable IHUMAN_KERNELS (auto, triton,
reference) overrides the default, and a `backend=` argument overrides both.
`triton` on CPU tensors runs the kernels in Triton's interpreter, which must be
switched on (TRITON_INTERPRET=1) before any kernel module is imported: that is
how the tests run the kernels themselves on a machine without a GPU. Each
(op, implementation) pair is logged once. Under torch.compile only attention keeps its kernel.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

from ihuman_kernels.errors import KernelError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "reference")
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_announced: set[tuple[str, str]] = set()


def choose(op: str, device: torch.device, backend: str | None = None) -> str:
    """'triton' or 'reference' for `op` on `device`."""
    if backend is None and torch.compiler.is_compiling():
        # Inside torch.compile the norm and RoPE are plain torch, which Inductor fuses with the
        # elementwise work around them (a hand-written kernel is a wall it cannot fuse across);
        # attention stays our kernel (a custom op the compiler calls as it is) on CUDA.
        return "triton" if op == "attention" and device.type == "cuda" and TRITON_AVAILABLE else "reference"
    wanted = backend or os.environ.get("IHUMAN_KERNELS", "auto")
    if wanted not in BACKENDS:
        raise KernelError(f"kernel backend {wanted!r}; choose one of {', '.join(BACKENDS)}")
    if wanted == "auto":
        wanted = "triton" if device.type == "cuda" and TRITON_AVAILABLE else "reference"
    if wanted == "triton":
        if not TRITON_AVAILABLE:
            raise KernelError(f"{op}: the triton backend was asked for, but triton is not installed")
        if device.type != "cuda" and not INTERPRET:
            raise KernelError(
                f"{op}: Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before the kernels "
                f"are imported (got {device.type} tensors)"
            )
    if (op, wanted) not in _announced:
        _announced.add((op, wanted))
        where = "interpreter" if wanted == "triton" and device.type != "cuda" else device.type
        log.info("kernels: %s runs the %s implementation (%s)", op, wanted, where)
    return wanted
