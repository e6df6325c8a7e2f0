"""The CPU int4 matmul of gptqmodel's packed weights: called by the int4 layers once loading has
made them skip their identity act-order gather (`model_loading._skip_identity_permutation`), and
by the dense runners' fused projections (`qwen2.FusedProjection`)."""

from __future__ import annotations

import torch


def int4_matmul(
    x: torch.Tensor, qweight: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor
) -> torch.Tensor:
    """`x` [..., in] times a weight packed by gptqmodel for the CPU int4 kernel, which takes bf16
    rows; the result comes back in `x`'s dtype, shaped [..., out]."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, qweight, group_size, scales_and_zeros)
    return out.to(x.dtype).view(*x.shape[:-1], out.shape[-1])
