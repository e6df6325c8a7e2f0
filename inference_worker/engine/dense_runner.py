"""The tensor side of the dense continuous batching (see `dense.py`): one left-padded KV cache
for the running batch, prefill of arrivals merged into it, one decode step for every row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache


class DenseModelRunner:
    def __init__(self, *, model: Any, generation_config: Any, pad_token_id: int, threads: int = 0) -> None:
        self.model = model
        self.threads = threads
        self.device = model.device
        self.pad = pad_token_id
        self.do_sample = bool(getattr(generation_config, "do_sample", False))
        self.temperature = float(getattr(generation_config, "temperature", None) or 1.0)
        self.top_p = float(getattr(generation_config, "top_p", None) or 1.0)
        self.top_k = int(getattr(generation_config, "top_k", None) or 0)
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [batch, cached tokens]: 1 real, 0 padding

    def bind_thread(self) -> None:
        # OpenMP thread teams belong to the calling thread. On the 2-core CPU a team of two in a
        # background thread made each step about twice as slow as one thread (measured: 7.5 vs
        # 4.6 ms at batch 32), while the main thread ran fastest with two.
        if self.threads:
            torch.set_num_threads(self.threads)

    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, length - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        self._merge(out.past_key_values, mask)
        return self._pick(out.logits[:, -1, :])

    @torch.no_grad()
    def decode(self, last_tokens: Sequence[int]) -> list[int]:
        ids = torch.tensor(list(last_tokens), dtype=torch.long, device=self.device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        positions = (self.mask.sum(-1, keepdim=True) - 1)
        out = self.model(
            input_ids=ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache, use_cache=True
        )
        self.cache = out.past_key_values
        return self._pick(out.logits[:, -1, :])

    def keep(self, indices: Sequence[int]) -> None:
        if not indices:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(list(indices), dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row (the longest request left) go too.
        first = int((self.mask.sum(0) > 0).nonzero()[0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:, :]
            layer.values = layer.values.index_select(0, index)[:, :, first:, :]

    def _merge(self, new_cache: DynamicCache, new_mask: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask = new_cache, new_mask
            return
        length = max(self.mask.shape[1], new_mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, length, dim=1), _left_pad(new_mask, length, dim=1)], dim=0)
        for old, new in zip(self.cache.layers, new_cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, length, dim=2), _left_pad(new.keys, length, dim=2)], dim=0)
            old.values = torch.cat([_left_pad(old.values, length, dim=2), _left_pad(new.values, length, dim=2)], dim=0)

    def _pick(self, logits: torch.Tensor) -> list[int]:
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
