"""Our kernels behind the ops the models call; each has a plain-torch reference beside it.

    attention(q, k, v, groups=, kv_lens=)        flash-attention forward (kernels/attention)
    rms_norm_modulate(x, shift, scale, weight)   fused RMSNorm + adaLN modulation (kernels/norm.py)
    apply_rope(x, cos, sin)                      fused rotary embedding (kernels/rope.py)

Dispatch (kernels/dispatch.py): Triton on CUDA when triton imports, the
reference elsewhere; IHUMAN_KERNELS=auto|triton|reference or `backend=`
overrides. Nothing here knows about models.
"""

from kernels.attention import attention, attention_reference, block_causal_mask
from kernels.errors import KernelError
from kernels.norm import rms_norm_modulate, rms_norm_modulate_reference
from kernels.rope import apply_rope, apply_rope_reference

__all__ = [
    "KernelError",
    "apply_rope",
    "apply_rope_reference",
    "attention",
    "attention_reference",
    "block_causal_mask",
    "rms_norm_modulate",
    "rms_norm_modulate_reference",
]
