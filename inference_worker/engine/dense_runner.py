"""The tensor side of the dense continuous batching (see `dense.py`): one left-padded KV cache
for the running batch, prefill of arrivals merged into it, one decode step for every row. The
layers' math of the packed pass is `qwen2.py`'s.

The cache lives in preallocated slabs (`_SlabLayer`): a decode step writes its one new column in
place instead of concatenating the whole cache into a new tensor (`DynamicCache`'s way), which
took a sizeable part of each step on the CPU (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from inference_worker.engine import qwen2
from inference_worker.torch_threads import cpus

# Spare columns allocated beyond the current length, so that decode steps write in place and the
# slab is reallocated (copied) once every this many steps at most.
SLAB_HEADROOM = 64
# Spare rows, so that most arrivals are written into free rows of the slabs instead of copying
# the whole cache into new ones (a copy at every admission; docs/benchmarks.md).
SLAB_ROW_HEADROOM = 8


class _SlabLayer(DynamicLayer):
    """A cache layer over a preallocated [row capacity, heads, column capacity, head_dim] slab per
    keys and values; `keys`/`values` are views of its first `rows` rows and `length` columns."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int, rows: int) -> None:
        super().__init__()
        self._keys, self._values, self.length, self.rows = keys, values, length, rows
        self.device = keys.device
        self.is_initialized = True
        self._views()

    @classmethod
    def stacked(cls, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> _SlabLayer:
        """Rows of several caches, one under the other, each right-aligned at column `length`
        (left-padded with zeros), in new slabs with headroom: each part is copied once."""
        return cls(_stack(keys, length), _stack(values, length), length, sum(k.shape[0] for k in keys))

    @property
    def row_capacity(self) -> int:
        return self._keys.shape[0]

    @property
    def column_capacity(self) -> int:
        return self._keys.shape[2]

    def _views(self) -> None:
        self.keys = self._keys[: self.rows, :, : self.length]
        self.values = self._values[: self.rows, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # The runner makes room before a decode step (`DenseModelRunner._extend_mask`, which
        # copies the slabs when no spare column is left), so the new column always fits.
        new = key_states.shape[2]
        self._keys[: self.rows, :, self.length : self.length + new].copy_(key_states)
        self._values[: self.rows, :, self.length : self.length + new].copy_(value_states)
        self.length += new
        self._views()
        return self.keys, self.values

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write new rows (left-padded, at most `length` columns wide) into free rows, right-aligned
        at column `length`; the caller checks that they fit."""
        count, pad = keys.shape[0], self.length - keys.shape[2]
        for slab, part in ((self._keys, keys), (self._values, values)):
            rows = slab[self.rows : self.rows + count]
            rows[:, :, :pad].zero_()  # padding: masked, but must not be NaN
            rows[:, :, pad : self.length].copy_(part)
        self.rows += count
        self._views()

    def move_rows(self, src: torch.Tensor, dst: torch.Tensor, rows: int) -> None:
        """Copy rows `src` over rows `dst`, then keep the first `rows` rows (the others become
        free rows)."""
        if len(src):
            self._keys[dst] = self._keys[src]
            self._values[dst] = self._values[src]
        self.rows = rows
        self._views()


def _stack(parts: list[torch.Tensor], length: int) -> torch.Tensor:
    first = parts[0]
    rows = sum(part.shape[0] for part in parts)
    slab = first.new_empty((rows + SLAB_ROW_HEADROOM, first.shape[1], length + SLAB_HEADROOM, first.shape[3]))
    row = 0
    for part in parts:
        count, pad = part.shape[0], length - part.shape[2]
        if pad:
            slab[row : row + count, :, :pad].zero_()  # padding: masked, but must not be NaN
        slab[row : row + count, :, pad:length].copy_(part)
        row += count
    return slab


class DenseModelRunner:
    def __init__(
        self, *, model: Any, generation_config: Any, pad_token_id: int, threads: int = 0, packed: bool | None = None
    ) -> None:
        self.model = model
        self.threads = threads
        self.device = model.device
        self.pad = pad_token_id
        self.do_sample = bool(getattr(generation_config, "do_sample", False))
        self.temperature = float(getattr(generation_config, "temperature", None) or 1.0)
        self.top_p = float(getattr(generation_config, "top_p", None) or 1.0)
        self.top_k = int(getattr(generation_config, "top_k", None) or 0)
        self.cache: DynamicCache | None = None  # its layers are `_SlabLayer`s
        self.mask: torch.Tensor | None = None  # [batch, cached tokens]: 1 real, 0 padding
        # One packed pass for decode rows and arrivals' prompts together (see `_packed_step`);
        # other architectures take two passes through the model's own forward.
        self.packed = qwen2.packs_prefill_with_decode(model) if packed is None else packed
        # The packed pass's linear layers, fused where they can be (the slot runner's too).
        self.projections = qwen2.LayerProjections(model.model.layers) if self.packed else None

    def bind_thread(self) -> None:
        # OpenMP thread teams belong to the calling thread: the loop's own count, `threads` (0:
        # one per CPU). A second thread pays off only while no other thread of the process holds
        # an OpenMP pool of its own (see inference_worker/torch_threads.py).
        torch.set_num_threads(self.threads or cpus())

    @torch.no_grad()
    def step(self, last_tokens: Sequence[int], prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        """One iteration: the running rows decode one token each (fed `last_tokens`) and the
        prompts are prefilled, their rows appended after the running ones. Returns the running
        rows' next tokens and each prompt's first token."""
        if not last_tokens and not prompts:
            return [], []
        if self.packed:
            return self._packed_step(last_tokens, prompts)
        next_tokens = self._hf_decode(last_tokens) if last_tokens else []
        first_tokens = self._hf_prefill(prompts) if prompts else []
        return next_tokens, first_tokens

    # -- one packed pass: decode rows and prompts through the layers together ------------------
    def _packed_step(self, last_tokens: Sequence[int], prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        """Every token of the step (one per decode row, then each prompt's tokens) goes through
        the linear layers as one packed matrix; only attention is split: decode rows attend over
        the dense cache, prompts causally over themselves (left-padded, as their cache rows are
        kept). On the CPU a prefill pass of its own cost about as much as a decode pass of a full
        batch (the int4 matmuls are bound by their per-call cost), so folding prompts into the
        decode pass removes most of the cost of an arrival and the pause it caused for the
        running rows (docs/benchmarks.md)."""
        body = self.model.model
        projections = self.projections
        decoding = len(last_tokens)
        lengths = [len(p) for p in prompts]
        flat = torch.tensor([*last_tokens, *(t for p in prompts for t in p)], dtype=torch.long, device=self.device)
        group = body.config.num_attention_heads // body.config.num_key_value_heads
        positions = []
        if decoding:
            positions.append(self._extend_mask())
            decode_mask = qwen2.group_mask(self.mask.bool()[:, None, None, :], group)
        if prompts:
            positions.append(torch.tensor([i for n in lengths for i in range(n)], dtype=torch.long, device=self.device))
            # Left-padded, as their cache rows are kept.
            gather, real, prompt_mask = qwen2.prompt_layout(lengths, decoding, group, self.device, left_padded=True)
        hidden = body.embed_tokens(flat)[None]
        cos, sin = body.rotary_emb(hidden, torch.cat(positions)[None])
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]
        new_keys, new_values = [], []
        for index, layer in enumerate(body.layers):
            attention = layer.self_attn
            residual = hidden
            x = qwen2.rms_norm(layer.input_layernorm, hidden)[0]
            q, k, v = projections.qkv(index, attention, x, cos, sin)
            if decoding:
                keys, values = self.cache.layers[index].update(k[:decoding, :, None], v[:decoding, :, None])
                decoded = qwen2.grouped_attention(q[:decoding, :, None], keys, values, decode_mask, attention.scaling)[
                    :, :, 0
                ]
            if not prompts:
                out = decoded
            else:
                out = torch.empty_like(q)
                if decoding:
                    out[:decoding] = decoded
                out[decoding:], pk, pv = qwen2.prompt_attention(q, k, v, gather, real, prompt_mask, attention.scaling)
                new_keys.append(pk)
                new_values.append(pv)
            hidden = residual + projections.o(index, attention, out.reshape(len(flat), -1))[None]
            hidden = hidden + projections.mlp(index, layer.mlp, qwen2.rms_norm(layer.post_attention_layernorm, hidden))
        hidden = qwen2.rms_norm(body.norm, hidden)[0]
        if prompts:
            hidden = hidden[qwen2.decode_rows_and_prompt_ends(decoding, lengths)]
        picked = self.pick(self.model.lm_head(hidden))
        if prompts:
            self._merge(new_keys, new_values, real.long())
        return picked[:decoding], picked[decoding:]

    # -- the model's own forward: two passes ---------------------------------------------------
    def _hf_prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, length - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        cache = out.past_key_values
        self._merge([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers], mask)
        return self.pick(out.logits[:, -1, :])

    def _hf_decode(self, last_tokens: Sequence[int]) -> list[int]:
        ids = torch.tensor(list(last_tokens), dtype=torch.long, device=self.device)[:, None]
        positions = self._extend_mask()[:, None]
        out = self.model(
            input_ids=ids, attention_mask=self.mask, position_ids=positions, cache=self.cache, use_cache=True
        )
        return self.pick(out.logits[:, -1, :])

    # -- the cache -----------------------------------------------------------------------------
    def _extend_mask(self) -> torch.Tensor:
        """Add the column this step's decode tokens fill; returns each row's position for it.
        When the slabs have no spare column left, they are copied into new ones first, without
        the columns that became padding in every row."""
        layer = self.cache.layers[0]
        if layer.length >= layer.column_capacity:
            self._restack()
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return self.mask.sum(-1) - 1

    def keep(self, indices: Sequence[int]) -> list[int]:
        """Keep the rows in `indices`; returns their new order (old indices by new row). Rows
        that leave are not compacted away: the last kept rows move into their places, so a
        leaving row costs a copy of at most as many rows as left (not of the whole cache)."""
        if not indices:
            self.cache, self.mask = None, None
            return []
        kept, count = set(indices), len(indices)
        holes = [row for row in range(count) if row not in kept]
        movers = [row for row in range(count, self.mask.shape[0]) if row in kept]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        src = torch.tensor(movers, dtype=torch.long, device=self.device)
        dst = torch.tensor(holes, dtype=torch.long, device=self.device)
        if movers:
            self.mask[dst] = self.mask[src]
        self.mask = self.mask[:count]
        for layer in self.cache.layers:
            layer.move_rows(src, dst, count)
        return order

    def _merge(self, keys: list[torch.Tensor], values: list[torch.Tensor], new_mask: torch.Tensor) -> None:
        """Append new rows (per layer [rows, heads, length, head_dim], left-padded) to the cache."""
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
            self.cache.layers = [_SlabLayer.stacked([k], [v], k.shape[2]) for k, v in zip(keys, values, strict=True)]
            self.mask = new_mask
            return
        rows, width = self.mask.shape
        layers = self.cache.layers
        if new_mask.shape[1] <= width and rows + new_mask.shape[0] <= layers[0].row_capacity:
            # The common case: the new rows fit in the slabs' free rows and current width.
            for layer, k, v in zip(layers, keys, values, strict=True):
                layer.append_rows(k, v)
            self.mask = torch.cat([self.mask, _left_pad(new_mask, width, dim=1)], dim=0)
            return
        self._restack(keys, values, new_mask)

    def _restack(
        self,
        keys: list[torch.Tensor] | None = None,
        values: list[torch.Tensor] | None = None,
        new_mask: torch.Tensor | None = None,
    ) -> None:
        """Copy the cache (and new rows, if given) into new slabs with fresh headroom. Columns that
        are padding in every running row (the longest one left) are dropped here, where the slabs
        are copied anyway."""
        first = int((self.mask.sum(0) > 0).nonzero()[0])
        old_mask = self.mask[:, first:]
        layers = self.cache.layers
        if new_mask is None:
            self.mask = old_mask
            keys, values = [[] for _ in layers], [[] for _ in layers]
        else:
            length = max(old_mask.shape[1], new_mask.shape[1])
            self.mask = torch.cat([_left_pad(old_mask, length, dim=1), _left_pad(new_mask, length, dim=1)], dim=0)
            keys, values = [[k] for k in keys], [[v] for v in values]
        length = self.mask.shape[1]
        self.cache.layers = [
            _SlabLayer.stacked([old.keys[:, :, first:], *k], [old.values[:, :, first:], *v], length)
            for old, k, v in zip(layers, keys, values, strict=True)
        ]

    def pick(self, logits: torch.Tensor) -> list[int]:
        """The next token of each row of `logits`, by the generation config's sampling settings."""
        logits = logits.float()
        if not self.do_sample:
            return logits.argmax(dim=-1).tolist()
        logits = logits / max(self.temperature, 1e-5)
        if self.top_k:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative - sorted_logits.softmax(dim=-1) > self.top_p  # keep the token that crosses top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return torch.multinomial(logits.softmax(dim=-1), 1)[:, 0].tolist()


def _left_pad(tensor: torch.Tensor, length: int, *, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
