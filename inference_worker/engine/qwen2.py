"""The forward math of a Qwen2 (or Llama) decoder layer, as both dense runners compute it:
packed passes where decode rows and arrivals' prompts go through the linear layers as one matrix
and only attention is split per kind. `dense_runner.py` (the left-padded cache) and
`slot_runner.py` (a cache slot per request) differ only in where keys and values live.

Each choice here was measured against the plainer way on the CPU (docs/benchmarks.md): fused
projections, grouped-query attention with stacked query heads, `F.rms_norm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F

from inference_worker.engine.int4 import int4_matmul

# Decoder-only models whose layers are exactly: RMSNorm -> attention (q/k/v/o projections, rotary
# embedding on q and k, grouped-query attention) -> residual -> RMSNorm -> MLP -> residual. The
# R1-Distill checkpoints are Qwen2 (1.5B, 7B, 14B, 32B) and Llama (8B, 70B).
PACKED_MODEL_TYPES = frozenset({"qwen2", "llama"})


def packs_prefill_with_decode(model: Any) -> bool:
    """Whether the model's layers are the ones this module computes (else a runner goes through
    the model's own forward)."""
    config = model.config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return (
        config.model_type in PACKED_MODEL_TYPES
        and layer_types == {"full_attention"}
        and not getattr(config, "use_sliding_window", False)
        and hasattr(model, "model")
        and hasattr(model.model, "rotary_emb")
    )


# -- the linear layers -----------------------------------------------------------------------------
class FusedProjection:
    """Projections that read the same input (q/k/v; gate/up) as one matmul, split after.

    On the CPU a projection of the demo model costs mostly its call, not its arithmetic, so one
    matmul for several is faster than one each (each also casts its input to bf16 when int4).
    The fused weight is the modules' weights one under the other, and the modules' own weights
    become views of it: no second copy, and the model's own forward (`generate`, the fallback
    path) reads the same numbers. Built only where every module is a plain `nn.Linear`, or where
    every one is a gptqmodel CPU int4 layer that calls its kernel directly
    (`model_loading._skip_identity_permutation`); `fuse` checks the fused matmul against the
    separate ones on a random input and keeps the modules as they were if they differ beyond
    rounding (an int4 packing that cannot be stacked, say). A single module is "fused" too: its
    matmul is then called directly, without the module's own call."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.sizes = [module.out_features for module in modules]
        biases = [module.bias for module in modules]
        present = next((bias for bias in biases if bias is not None), None)
        self.bias = None
        if present is not None:  # a module without one adds zeros
            self.bias = torch.cat(
                [b.detach() if b is not None else present.new_zeros(n) for b, n in zip(biases, self.sizes, strict=True)]
            )
        if all(type(module) is torch.nn.Linear for module in modules):
            self.int4 = False
            self.weight = torch.cat([module.weight.detach() for module in modules])
        else:
            self.int4 = True
            self.group_size = modules[0].group_size
            self.weight = torch.cat([module.qweight for module in modules])
            self.scales_and_zeros = torch.cat([module.scales_and_zeros for module in modules], dim=1).contiguous()

    @classmethod
    def fuse(cls, modules: list[torch.nn.Module]) -> FusedProjection | None:
        if not _fusable(modules):
            return None
        fused = cls(modules)
        x = torch.randn(3, modules[0].in_features, device=fused.weight.device)
        x = x.to(fused.weight.dtype) if not fused.int4 else x
        with torch.no_grad():
            separate = [module(x) for module in modules]
            together = fused(x)
        # A wrong stacking gives other numbers, not rounding: the matmul's blocking may change
        # the last bits (it does for fp32 GEMMs of other widths), which is no fault.
        if not all(_close(a, b) for a, b in zip(separate, together, strict=True)):
            return None
        fused._share_weights(modules)
        return fused

    def _share_weights(self, modules: list[torch.nn.Module]) -> None:
        offset = 0
        for module, size in zip(modules, self.sizes, strict=True):
            rows = self.weight[offset : offset + size]
            if self.int4:
                module.qweight = rows  # a buffer
            else:
                module.weight = torch.nn.Parameter(rows, requires_grad=False)
            offset += size

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.matmul(x).split(self.sizes, dim=-1))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The modules' outputs side by side, [..., sum of their out_features]."""
        if self.int4:
            out = int4_matmul(x, self.weight, self.group_size, self.scales_and_zeros)
            if self.bias is not None:
                out.add_(self.bias)
            return out
        return F.linear(x, self.weight, self.bias)


def _project(direct: FusedProjection | None, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return direct.matmul(x) if direct is not None else module(x)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(a.abs().max()) or 1.0
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3 * scale))


def _fusable(modules: list[torch.nn.Module]) -> bool:
    if all(type(module) is torch.nn.Linear for module in modules):
        return len({(m.in_features, m.weight.dtype, m.weight.device) for m in modules}) == 1
    return (
        all(getattr(module, "int4_direct", False) and not getattr(module, "adapter", None) for module in modules)
        and len({(m.in_features, m.group_size) for m in modules}) == 1
    )


class LayerProjections:
    """Every layer's linear layers as the packed pass calls them: q/k/v as one matmul and
    gate/up as one (`FusedProjection`, None per layer where they cannot be fused), o and down
    each called straight (the module's own call costs as much as a small op, and there are two
    per layer)."""

    def __init__(self, layers: Sequence[torch.nn.Module]) -> None:
        self.fused_qkv: list[FusedProjection | None] = []
        self.fused_gate_up: list[FusedProjection | None] = []
        self.direct_o: list[FusedProjection | None] = []
        self.direct_down: list[FusedProjection | None] = []
        for layer in layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.fused_qkv.append(FusedProjection.fuse([attention.q_proj, attention.k_proj, attention.v_proj]))
            self.fused_gate_up.append(FusedProjection.fuse([mlp.gate_proj, mlp.up_proj]))
            self.direct_o.append(FusedProjection.fuse([attention.o_proj]))
            self.direct_down.append(FusedProjection.fuse([mlp.down_proj]))

    def qkv(self, index: int, attention: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Layer `index`'s queries, keys and values for the packed tokens `x` [tokens, hidden],
        rotary embedding applied: each [tokens, heads, head_dim]."""
        dim, total = attention.head_dim, x.shape[0]
        qkv = self.fused_qkv[index]
        if qkv is not None:
            # q and k side by side in the stacked output: one rotary for both.
            heads, kv_heads = qkv.sizes[0] // dim, qkv.sizes[1] // dim
            projected = qkv.matmul(x).view(total, -1, dim)
            qk = projected[:, : heads + kv_heads]
            qk = qk * cos + rotate_half(qk) * sin
            return qk[:, :heads], qk[:, heads:], projected[:, heads + kv_heads :]
        q, k, v = (t.reshape(total, -1, dim) for t in (attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)))
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def o(self, index: int, attention: Any, x: torch.Tensor) -> torch.Tensor:
        return _project(self.direct_o[index], attention.o_proj, x)

    def mlp(self, index: int, mlp: Any, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.fused_gate_up[index]
        if gate_up is None:
            return mlp(x)
        gate, up = gate_up(x)
        return _project(self.direct_down[index], mlp.down_proj, mlp.act_fn(gate) * up)


# -- norms and rotary embedding --------------------------------------------------------------------
def rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm, as one op where that gives the same numbers: in fp32 (which the
    model's own norm computes in anyway), `F.rms_norm` is bit-identical and faster on the CPU;
    other dtypes go through the module."""
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", None)
    if x.dtype != torch.float32 or weight is None or weight.dtype != torch.float32 or eps is None:
        return norm(x)
    return F.rms_norm(x, weight.shape, weight, eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# -- attention -------------------------------------------------------------------------------------
def group_mask(mask: torch.Tensor, group: int) -> torch.Tensor:
    """A boolean attention mask [rows, 1, n, length] for `grouped_attention`, whose query rows
    are the `group` query heads of a kv head stacked: [rows, 1, group * n, length]. Built once
    per step and shared by every layer."""
    return mask.repeat(1, 1, group, 1)


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Grouped-query attention: q [rows, heads, n, dim] over k, v [rows, kv_heads, length, dim]
    with a mask from `group_mask`. The query heads that share a kv head are stacked as extra
    query rows of that head (kv head j serves query heads j*g .. j*g+g-1, as transformers'
    `repeat_kv` orders them): one small attention per kv head, faster on the CPU than
    `enable_gqa=True` or repeating the keys."""
    rows, heads, n, dim = q.shape
    kv_heads = k.shape[1]
    out = F.scaled_dot_product_attention(
        q.reshape(rows, kv_heads, heads // kv_heads * n, dim), k, v, attn_mask=mask, scale=scale
    )
    # On CUDA the fused attention kernels may hand back another memory layout: reshape, not view.
    return out.reshape(rows, heads, n, dim)


def prompt_layout(
    lengths: Sequence[int], offset: int, group: int, device: Any, *, left_padded: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the prompts' packed tokens (from index `offset` of the step's tokens, one prompt
    after another) go in a [prompts, longest] batch for attention: `gather` (token index by
    batch cell), `real` (cell holds a token, not padding) and the causal mask for
    `grouped_attention`. Built on the host: one copy each, not a few small ops per prompt."""
    width = max(lengths)
    gather_host = [[0] * width for _ in lengths]
    real_host = [[False] * width for _ in lengths]
    for row, length in enumerate(lengths):
        start = width - length if left_padded else 0
        gather_host[row][start : start + length] = range(offset, offset + length)
        real_host[row][start : start + length] = [True] * length
        offset += length
    gather = torch.tensor(gather_host, dtype=torch.long, device=device)
    real = torch.tensor(real_host, dtype=torch.bool, device=device)
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    eye = torch.eye(width, dtype=torch.bool, device=device)
    # A padding query sees only itself (its output is dropped), so no row is all masked.
    return gather, real, group_mask((causal[None, None] & real[:, None, None, :]) | eye[None, None], group)


def prompt_attention(q, k, v, gather, real, mask, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each prompt's tokens attend causally over that prompt (layout from `prompt_layout`).
    Returns the outputs of the real tokens in packed order, and the prompts' keys and values as
    [prompts, kv heads, longest, head_dim] with zeros in the padding."""
    keys = (k[gather] * real[:, :, None, None]).transpose(1, 2)
    values = (v[gather] * real[:, :, None, None]).transpose(1, 2)
    out = grouped_attention(q[gather].transpose(1, 2), keys, values, mask, scale)
    return out.transpose(1, 2)[real], keys, values


def decode_rows_and_prompt_ends(decoding: int, lengths: Sequence[int]) -> list[int]:
    """The packed rows whose logits a step needs: every decode row, and each prompt's last token."""
    return [*range(decoding), *(decoding - 1 + end for end in accumulate(lengths))]
