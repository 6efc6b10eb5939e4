"""Our kernels behind the ops the models call; each has a plain-torch reference beside it.

    attention(q, k, v, groups=, kv_lens=)        flash-attention forward (ihuman_kernels/attention)
    rms_norm_modulate(x, shift, scale, weight)   fused RMSNorm + adaLN modulation (ihuman_kernels/norm.py)
    apply_rope(x, cos, sin)                      fused rotary embedding (ihuman_kernels/rope.py)

Dispatch (ihuman_kernels/dispatch.py): Triton on CUDA when triton imports, the
reference elsewhere; IHUMAN_KERNELS=auto|triton|reference or `backend=`
overrides. Nothing here knows about models.
"""

from ihuman_kernels.attention import attention, attention_by_group, attention_reference, block_causal_mask
from ihuman_kernels.errors import KernelError
from ihuman_kernels.norm import rms_norm_modulate, rms_norm_modulate_reference
from ihuman_kernels.rope import apply_rope, apply_rope_reference

__all__ = [
    "KernelError",
    "apply_rope",
    "apply_rope_reference",
    "attention",
    "attention_by_group",
    "attention_reference",
    "block_causal_mask",
    "rms_norm_modulate",
    "rms_norm_modulate_reference",
]
