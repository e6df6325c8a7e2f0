"""The dense backend's tensor side for CUDA: a KV cache of fixed slots, and decode steps replayed
from CUDA graphs.

On a GPU the left-padded runner (`dense_runner.py`) spent most of a decode step at a large
batch with the GPU idle: the CPU launched the step's hundreds of kernels one by one (and planned
cuDNN attention; docs/benchmarks.md). A CUDA graph launches a whole step at once, but it
replays fixed shapes on fixed memory, which the left-padded cache does not have (its slabs are
copied when they fill, and its shared write column moves). So here every request owns one slot
(one row of a [slots, kv heads, columns, head_dim] tensor per layer, allocated once) for its
whole life: its prompt fills columns 0.., each decode step writes its token's key and value at
its own length, and attention masks each slot's columns beyond its length. A decode step then
has the same shapes every time for a given (slot count, column bucket): it is captured once per
pair and replayed with the step's tokens and positions copied into static inputs. Each new
graph is checked against the same step run eagerly, when it is captured and again at its next
use: a graph whose logits differ in any slot in use (or that cannot be captured) turns graphs
off, with a warning, and decoding goes on eagerly.

Steps with arrivals run eagerly (the same packed pass as `dense_runner.py`, with `qwen2.py`'s
layer math: the decode rows and the prompts through the linear layers together). Without CUDA
(and with `graphs=False`) decode steps run the same function eagerly: that is what the CPU tests
check against `generate`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch

from inference_worker.engine import qwen2
from inference_worker.engine.dense_runner import DenseModelRunner

logger = logging.getLogger(__name__)

# Slot counts a decode graph is captured for (a step uses the smallest that covers its highest
# slot in use), and the column granularity of its attention: fewer graphs against less padding.
SLOT_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256)
COLUMN_BUCKET = 256


# PyTorch allows one CUDA graph capture at a time in a process; two variants' batch loops can
# share one (ENGINE_PROCESS=false).
_CAPTURE_LOCK = threading.Lock()


def logits_agree(replayed: torch.Tensor, eager: torch.Tensor) -> bool:
    """A graph's logits against the eager pass's for the same rows: finite, and within 1% of
    the largest eager logit (the same kernels give the same bits; the margin is for a kernel
    the capture may pick differently, not for a wrong graph, whose logits are another step's)."""
    replayed, eager = replayed.float(), eager.float()
    if not bool(torch.isfinite(replayed).all()):
        return False
    return bool((replayed - eager).abs().max() <= 0.01 * eager.abs().max() + 1e-3)


def _bucket(value: int, buckets: Sequence[int], limit: int) -> int:
    for bucket in buckets:
        if bucket >= value:
            return min(bucket, limit)
    step = buckets[-1] - buckets[-2] if len(buckets) > 1 else buckets[-1]
    return min(-(-value // step) * step, limit)


class SlotModelRunner:
    """Implements `dense.Runner` (`step`, `keep`, `bind_thread`) over a slot cache."""

    def __init__(
        self,
        *,
        model: Any,
        generation_config: Any,
        pad_token_id: int,
        slots: int,
        columns: int,
        graphs: bool | None = None,
    ) -> None:
        if not qwen2.packs_prefill_with_decode(model):
            raise ValueError(f"the slot runner needs a Qwen2 or Llama model, not {model.config.model_type!r}")
        # The sampling (`pick`), the thread binding and the fused projections are the dense runner's.
        self._dense = DenseModelRunner(
            model=model, generation_config=generation_config, pad_token_id=pad_token_id, packed=True
        )
        self.model = model
        self.device = model.device
        self.slots = slots
        self.columns = columns
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        body = model.model
        config = body.config
        self.group = config.num_attention_heads // config.num_key_value_heads
        dtype = body.embed_tokens.weight.dtype
        shape = (slots, config.num_key_value_heads, columns, body.layers[0].self_attn.head_dim)
        # Zeros, not empty memory: a masked column still enters attention's sum times zero,
        # and garbage bits there could be NaN.
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in body.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in body.layers]
        self.lengths = [0] * slots  # tokens cached in each slot
        self.row_slots: list[int] = []  # the manager's row index -> its slot
        self._free = list(range(slots))
        # The decode step's static inputs (tokens and positions by slot) and its graphs.
        self._inputs = torch.zeros((2, slots), dtype=torch.long, device=self.device)
        self._columns = torch.arange(columns, device=self.device)
        self._graphs: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        self._unconfirmed: set[tuple[int, int]] = set()  # graphs not yet checked at a second use
        self._pool = None
        self._stream = None
        self.graphs_captured = 0

    def bind_thread(self) -> None:
        self._dense.bind_thread()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # streams and captures are on the current device

    # -- the manager's interface -------------------------------------------------------------
    @torch.no_grad()
    def step(self, last_tokens: Sequence[int], prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        if not last_tokens and not prompts:
            return [], []
        decoding = self.row_slots[: len(last_tokens)]
        for slot in decoding:
            if self.lengths[slot] >= self.columns:
                raise RuntimeError(f"a request outgrew its cache slot ({self.columns} tokens)")
        new_slots = self._allocate([len(p) for p in prompts])
        width = max((self.lengths[s] + 1 for s in decoding), default=1)
        count = _bucket(max(decoding, default=-1) + 1, SLOT_BUCKETS, self.slots) if decoding else 0
        span = _bucket(width, (COLUMN_BUCKET,), self.columns)
        tokens = [0] * count
        positions = [0] * count
        for slot, token in zip(decoding, last_tokens, strict=True):
            tokens[slot], positions[slot] = token, self.lengths[slot]
        if count:
            self._inputs[:, :count].copy_(torch.tensor([tokens, positions], dtype=torch.long))
        if prompts:
            logits, first = self._forward(count, span, prompts, new_slots)
        elif self.graphs:
            logits = self._replay(count, span, decoding)
        else:
            logits = self._forward(count, span)[0]
        for slot in decoding:
            self.lengths[slot] += 1
        picked = (
            self._dense.pick(logits[torch.tensor(decoding, dtype=torch.long, device=self.device)]) if decoding else []
        )
        for slot, prompt in zip(new_slots, prompts, strict=True):
            self.lengths[slot] = len(prompt)
        self.row_slots += new_slots
        return picked, (self._dense.pick(first) if prompts else [])

    def keep(self, indices: Sequence[int]) -> list[int]:
        kept = set(indices)
        for row, slot in enumerate(self.row_slots):
            if row not in kept:
                self.lengths[slot] = 0
                self._free.append(slot)
        self._free.sort()
        self.row_slots = [self.row_slots[i] for i in indices]
        return list(indices)

    def _allocate(self, lengths: Sequence[int]) -> list[int]:
        if len(lengths) > len(self._free):
            raise RuntimeError(f"{len(lengths)} arrivals but {len(self._free)} free cache slots")
        for length in lengths:
            if length >= self.columns:
                raise RuntimeError(f"a prompt of {length} tokens does not fit a cache slot of {self.columns}")
        taken, self._free = self._free[: len(lengths)], self._free[len(lengths) :]
        return taken

    # -- CUDA graphs ---------------------------------------------------------------------------
    def _replay(self, count: int, span: int, decoding: Sequence[int]) -> torch.Tensor:
        key = (count, span)
        entry = self._graphs.get(key)
        if entry is None:
            return self._capture_and_check(count, span, decoding)
        graph, logits = entry
        graph.replay()
        if key in self._unconfirmed:
            # Its first replay on other inputs than the capture's: checked once more, so that a
            # value the capture froze instead of reading it from the static inputs shows.
            self._unconfirmed.discard(key)
            return self._checked(logits, count, span, decoding)
        return logits

    def _capture_and_check(self, count: int, span: int, decoding: Sequence[int]) -> torch.Tensor:
        """Capture the step's graph, replay it, and run the same step eagerly (both write the
        same keys and values, so running the step twice changes nothing): the graph is kept if
        its logits agree with the eager pass's in every slot in use, and checked so once more
        at its next use. A graph that cannot be captured (an op that syncs, a quantized kernel
        that allocates, no CUDA) or that disagrees turns graphs off for good, with a warning:
        every later step runs eagerly, as fast as the left-padded runner or faster, and right.
        Returns the eager pass's logits."""
        try:
            graph, logits = self._capture(count, span)
            logits.fill_(float("nan"))  # a replay that computes nothing (an empty capture) cannot pass
            graph.replay()
        except Exception as exc:  # noqa: BLE001 - a step that cannot be captured still runs
            return self._eager_from_now_on(f"CUDA graph capture failed ({type(exc).__name__}: {exc})", count, span)
        key = (count, span)
        self._graphs[key] = (graph, logits)
        self._unconfirmed.add(key)
        self.graphs_captured += 1
        return self._checked(logits, count, span, decoding)

    def _checked(self, replayed: torch.Tensor, count: int, span: int, decoding: Sequence[int]) -> torch.Tensor:
        """The step run eagerly, against a graph's replayed logits; returns the eager logits."""
        rows = list(decoding)
        mine = replayed[rows]  # a copy, before anything else runs
        eager = self._forward(count, span)[0]
        if not logits_agree(mine, eager[rows]):
            return self._eager_from_now_on(
                f"a CUDA graph's logits differ from the eager pass's ({count} slots, {span} columns)",
                count,
                span,
                eager,
            )
        return eager

    def _eager_from_now_on(self, why: str, count: int, span: int, logits: torch.Tensor | None = None) -> torch.Tensor:
        logger.warning("%s; decode steps run eagerly", why)
        self.graphs = False
        self._graphs.clear()
        self._unconfirmed.clear()
        return logits if logits is not None else self._forward(count, span)[0]

    def _capture(self, count: int, span: int):
        """Capture one decode step, on the runner's own device and stream. The warm-up runs
        before it write the same keys and values (those of this step's inputs) that the replay
        writes again, so they change nothing."""
        with _CAPTURE_LOCK, torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            try:
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                    self._stream = torch.cuda.Stream(device=self.device)
                self._stream.wait_stream(current)
                with torch.cuda.stream(self._stream):
                    for _ in range(2):
                        self._forward(count, span)
                current.wait_stream(self._stream)
                graph = torch.cuda.CUDAGraph()
                # thread_local: CUDA work of another thread meanwhile (the worker loading the
                # other variant) is no error for this capture. Two captures at once in one
                # process are not allowed at all: hence the lock.
                with torch.cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
                    logits = self._forward(count, span)[0]
            finally:
                # A capture that failed can leave its stream the thread's current one.
                torch.cuda.set_stream(current)
        return graph, logits

    # -- one pass ------------------------------------------------------------------------------
    def _forward(
        self, count: int, span: int, prompts: Sequence[Sequence[int]] = (), new_slots: Sequence[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Slots 0..count-1 decode one token each (static inputs `_inputs`; slots not in use
        compute numbers nobody reads), attending over their first `span` columns; prompts, if
        any, go through the linear layers in the same matrix, attend causally over themselves,
        and their keys and values are written into their new slots. Returns the decode logits
        by slot and each prompt's last-token logits."""
        projections = self._dense.projections
        body = self.model.model
        lengths = [len(p) for p in prompts]
        tokens, positions = self._inputs[0, :count], self._inputs[1, :count]
        if prompts:
            flat_prompts = torch.tensor([t for p in prompts for t in p], dtype=torch.long, device=self.device)
            prompt_positions = torch.tensor(
                [i for n in lengths for i in range(n)], dtype=torch.long, device=self.device
            )
            prompt_slots = torch.tensor(
                [slot for slot, n in zip(new_slots, lengths, strict=True) for _ in range(n)],
                dtype=torch.long,
                device=self.device,
            )
            flat = torch.cat([tokens, flat_prompts])
            all_positions = torch.cat([positions, prompt_positions])
            # Right-padded: a prompt's cache columns start at 0 in its slot.
            gather, real, prompt_mask = qwen2.prompt_layout(lengths, count, self.group, self.device, left_padded=False)
        else:
            flat, all_positions = tokens, positions
        total = flat.shape[0]
        if count:
            rows = torch.arange(count, device=self.device)
            decode_mask = qwen2.group_mask(
                (self._columns[None, :span] <= positions[:, None])[:, None, None, :], self.group
            )
        hidden = body.embed_tokens(flat)[None]
        cos, sin = body.rotary_emb(hidden, all_positions[None])
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]
        for index, layer in enumerate(body.layers):
            attention = layer.self_attn
            residual = hidden
            x = qwen2.rms_norm(layer.input_layernorm, hidden)[0]
            q, k, v = projections.qkv(index, attention, x, cos, sin)
            keys, values = self.keys[index], self.values[index]
            out = torch.empty_like(q) if prompts else None
            if count:
                keys[rows, :, positions] = k[:count]
                values[rows, :, positions] = v[:count]
                decoded = qwen2.grouped_attention(
                    q[:count, :, None], keys[:count, :, :span], values[:count, :, :span], decode_mask, attention.scaling
                )[:, :, 0]
                if out is None:
                    out = decoded
                else:
                    out[:count] = decoded
            if prompts:
                keys[prompt_slots, :, prompt_positions] = k[count:]
                values[prompt_slots, :, prompt_positions] = v[count:]
                out[count:] = qwen2.prompt_attention(q, k, v, gather, real, prompt_mask, attention.scaling)[0]
            hidden = residual + projections.o(index, attention, out.reshape(total, -1))[None]
            hidden = hidden + projections.mlp(index, layer.mlp, qwen2.rms_norm(layer.post_attention_layernorm, hidden))
        hidden = qwen2.rms_norm(body.norm, hidden)[0]
        if prompts:
            hidden = hidden[qwen2.decode_rows_and_prompt_ends(count, lengths)]
        logits = self.model.lm_head(hidden)
        return logits[:count], (logits[count:] if prompts else None)
