"""A copying circuit built into the demo model's first two layers before training (the ``reader``
preset).

Reading the help center means copying from the prompt: the demo model's grounded answer is its
passage's text, and when an article was edited after training, the new figures exist only in the
prompt. The attention that does this (an "induction head": attend to what followed an earlier
occurrence of the current context, and predict it) does not grow in a model this small within the
minutes the build has on two CPU cores (docs/demo-model.md has the curves). So the build sets it
up by hand, and training starts from a model that already copies:

* the token embedding lives in the first half of the residual stream (``A``);
* layer 0, one head per token of context n (the reader: three): constant queries and keys
  (biases only) whose RoPE rotation makes the score peak exactly 1, 2, …, n positions back; each
  writes the code (a projection of the embedding) of the token it lands on into a subspace of
  its own (``B1``, ``B2``, …);
* layer 1, one head, the induction head: its query is the codes of the current token and of the
  n - 1 before it, its key the n codes layer 0 wrote, on RoPE's slowest pairs (nearly unrotated
  over the window, so the match does not depend on the distance: hence RoPE base 10^6, as
  Qwen2.5's); it lands where the tokens before are the tokens at the query, and writes a code of
  the token it lands on into one more subspace (``C``), which the output head reads back as that
  token;
* every other residual branch (attention outputs, MLPs) starts at zero, as zero-initialised
  residual branches do, and learns from there.

Training holds the circuit's queries, keys and values (``hold_copy_circuit``; left free, training
took it apart) and trains everything else, including what the model makes of the copy. The result
is a plain ``Qwen2ForCausalLM``: saved, quantized and loaded as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import Qwen2ForCausalLM

EMBED_STD = 0.02  # the embedding's init scale (the Hugging Face default)
PREVIOUS_TOKEN_PAIRS = 8  # RoPE's fastest pairs, which the previous-token head's score uses
PREVIOUS_TOKEN_MARGIN = 40.0  # its score at its distance over one position off (in logits)
MATCH_SCORE = 25.0  # the induction head's score where both tokens match (in logits)
READOUT_LOGIT = 10.0  # the copied token's logit from the readout alone, on random text
_SEED = 1234


@dataclass(frozen=True)
class CopyLayout:
    """Where the circuit lives: residual subspaces and heads."""

    token: slice  # A: the token embedding
    previous: tuple[slice, ...]  # B1..Bn: the codes of the n tokens before (layer 0 writes them)
    copied: slice  # C: the copied token's code (layer 1 writes it, the output head reads it)
    previous_heads: tuple[int, ...]  # layer 0: the heads that look 1..n positions back
    induction_head: int  # layer 1
    match_dims: tuple[int, ...]  # the induction head's query/key dimensions (RoPE's slowest pairs)

    @property
    def context(self) -> int:
        """How many tokens the induction head matches (the current one and those before)."""
        return len(self.previous)

    def match_parts(self) -> list[tuple[int, ...]]:
        """match_dims split into one part per matched token."""
        size, rest = divmod(len(self.match_dims), self.context)
        parts, start = [], 0
        for part in range(self.context):
            end = start + size + (part < rest)
            parts.append(self.match_dims[start:end])
            start = end
        return parts


def copy_layout(config, *, context: int = 2) -> CopyLayout | None:
    """The layout for a geometry matching ``context`` tokens, or None when it has no room."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = hidden // heads
    half = head_dim // 2
    token = hidden // 2
    code = (hidden - token - head_dim) // context  # each B
    slow = range(half // 2, half)  # the slower half of the pairs: half a head's dimensions
    if config.num_hidden_layers < 2 or heads < context + 1 or context < 1 or code < -(-half // context):
        return None
    previous = tuple(slice(token + n * code, token + (n + 1) * code) for n in range(context))
    return CopyLayout(
        token=slice(0, token),
        previous=previous,
        copied=slice(token + context * code, hidden),
        previous_heads=tuple(range(heads - context, heads)),  # the last heads
        induction_head=0,
        match_dims=tuple(list(slow) + [p + half for p in slow]),
    )


def _orthonormal_rows(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=generator))
    return q.T.contiguous()  # rows x cols, orthonormal rows (rows <= cols)


def _heads(config) -> tuple[int, int]:
    """(head dimension, query heads per KV head) of a geometry."""
    return config.hidden_size // config.num_attention_heads, config.num_attention_heads // config.num_key_value_heads


def _head(index: int, head_dim: int) -> slice:
    return slice(index * head_dim, (index + 1) * head_dim)


def _size(part: slice) -> int:
    return part.stop - part.start


def _silence_group(attention, *, kv: int, group: int, head_dim: int) -> None:
    """Zero the queries of a KV group's heads (they attend evenly) and its keys and values."""
    for h in range(kv * group, (kv + 1) * group):
        attention.q_proj.weight[_head(h, head_dim)] = 0
        attention.q_proj.bias[_head(h, head_dim)] = 0
    for proj in (attention.k_proj, attention.v_proj):
        proj.weight[_head(kv, head_dim)] = 0
        proj.bias[_head(kv, head_dim)] = 0


@torch.no_grad()
def install_copy_circuit(model: Qwen2ForCausalLM, *, context: int = 2) -> CopyLayout | None:
    """Set a freshly initialised model's weights up as described in the module's docstring,
    matching ``context`` tokens. Returns the layout, or None (weights untouched) when the geometry
    has no room for it."""
    config = model.config
    layout = copy_layout(config, context=context)
    if layout is None:
        return None
    head_dim, group = _heads(config)
    half = head_dim // 2
    generator = torch.Generator().manual_seed(_SEED)
    code = _size(layout.previous[0])

    embed = model.model.embed_tokens.weight
    embed.zero_()
    codes = torch.randn(config.vocab_size, _size(layout.token), generator=generator)
    embed[:, layout.token] = codes * EMBED_STD
    for layer in model.model.layers:  # residual branches start silent
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    token_code = _orthonormal_rows(code, _size(layout.token), generator)
    copied = min(_size(layout.copied), head_dim)
    copied_code = _orthonormal_rows(copied, _size(layout.token), generator)
    write = EMBED_STD * math.sqrt(2)  # a normalised embedding's code, back at the embedding's size

    # Layer 0: heads with a constant key; their constant queries, rotated by RoPE, make the scores
    # peak 1..n positions back. Each reads the code of the token it lands on and writes it into
    # its B (with grouped queries they share KV heads).
    attention = model.model.layers[0].self_attn
    for kv in sorted({h // group for h in layout.previous_heads}):
        _silence_group(attention, kv=kv, group=group, head_dim=head_dim)
    inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2).double() / head_dim))
    pairs = min(PREVIOUS_TOKEN_PAIRS, half)
    gap = sum(1 - math.cos(t) for t in inv_freq[:pairs].tolist())
    a = math.sqrt(PREVIOUS_TOKEN_MARGIN * math.sqrt(head_dim) / gap)
    for back, (head, target) in enumerate(zip(layout.previous_heads, layout.previous, strict=True), 1):
        q0, k0 = head * head_dim, head // group * head_dim
        for p in range(pairs):  # score per pair: a^2 cos((distance - back) t)
            t = inv_freq[p].item()
            attention.q_proj.bias[q0 + p] = a * math.cos(back * t)
            attention.q_proj.bias[q0 + p + half] = -a * math.sin(back * t)
            attention.k_proj.bias[k0 + p] = a
        attention.v_proj.weight[k0 : k0 + code, layout.token] = token_code
        attention.o_proj.weight[target, q0 : q0 + code] = torch.eye(code) * write

    # Layer 1: the induction head. Query: the codes of the current token (from A) and of the
    # n - 1 before it (B1..); key: the codes of the n tokens before (B1..Bn); so it lands where
    # the n tokens before it are the n tokens at the query. Value: the copied code.
    attention = model.model.layers[1].self_attn
    kv = layout.induction_head // group
    _silence_group(attention, kv=kv, group=group, head_dim=head_dim)
    q0, k0 = layout.induction_head * head_dim, kv * head_dim
    for part, dims in enumerate(layout.match_parts()):
        for row, dim in enumerate(dims):
            if part == 0:
                attention.q_proj.weight[q0 + dim, layout.token] = token_code[row]
            else:
                attention.q_proj.weight[q0 + dim, layout.previous[part - 1].start + row] = 1.0
            attention.k_proj.weight[k0 + dim, layout.previous[part].start + row] = 1.0
    attention.v_proj.weight[k0 : k0 + copied, layout.token] = copied_code
    attention.o_proj.weight[layout.copied.start : layout.copied.start + copied, q0 : q0 + copied] = (
        torch.eye(copied) * write
    )

    lm_head = model.lm_head.weight
    lm_head.zero_()
    lm_head[:, layout.copied.start : layout.copied.start + copied] = codes @ copied_code.T
    _calibrate(model, layout)
    return layout


def _repeated_spans(
    vocab_size: int, *, rows: int, span: int, filler: int, seed: int, low: int = 16
) -> tuple[torch.Tensor, int]:
    """Rows of BOS (id 1, the demo tokenizer's), a random span, random filler, the same span
    again; and where the repeat starts."""
    generator = torch.Generator().manual_seed(seed)
    spans = torch.randint(low, vocab_size, (rows, span), generator=generator)
    fill = torch.randint(low, vocab_size, (rows, filler), generator=generator)
    ids = torch.cat([torch.ones(rows, 1, dtype=torch.long), spans, fill, spans], 1)
    return ids, 1 + span + filler


@torch.no_grad()
def _calibrate(model: Qwen2ForCausalLM, layout: CopyLayout) -> None:
    """Scale the induction head's query (each matched token's part to its share of MATCH_SCORE
    on a match) and the output head (a copied token gets READOUT_LOGIT), from measured forward
    passes."""
    config = model.config
    head_dim, group = _heads(config)
    span = 40
    ids, start = _repeated_spans(config.vocab_size, rows=8, span=span, filler=0, seed=7)
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
    attention = model.model.layers[1].self_attn
    normed = model.model.layers[1].input_layernorm(hidden)
    q0 = layout.induction_head * head_dim
    k0 = layout.induction_head // group * head_dim
    q = attention.q_proj(normed)
    k = attention.k_proj(normed)
    n = layout.context
    for dims in layout.match_parts():
        rows_q = [q0 + d for d in dims]
        rows_k = [k0 + d for d in dims]
        # Unrotated (these pairs barely rotate): repeat token i (i >= n - 1) against the first
        # copy's token i + 1, whose n previous tokens are the repeat's tokens i, i - 1, ...
        score = (q[:, start + n - 1 : start + span - 1][..., rows_q] * k[:, n + 1 : span + 1][..., rows_k]).sum(-1)
        attention.q_proj.weight[rows_q] *= (MATCH_SCORE / n) / (score.mean().item() / math.sqrt(head_dim))
    logits = model(input_ids=ids).logits[:, start + n - 1 : start + span - 1]
    right = logits.gather(-1, ids[:, start + n : start + span, None]).mean()
    model.lm_head.weight *= READOUT_LOGIT / right.item()


@torch.no_grad()
def copy_accuracy(model: Qwen2ForCausalLM, *, span: int = 40, filler: int = 30, rows: int = 16, seed: int = 3) -> float:
    """The share of a repeated random span's tokens (after its first) that the model predicts,
    greedy: 1/vocabulary for a model that does not copy."""
    was_training = model.training
    model.eval()
    ids, start = _repeated_spans(model.config.vocab_size, rows=rows, span=span, filler=filler, seed=seed)
    logits = model(input_ids=ids).logits[:, start : start + span - 1]
    model.train(was_training)
    return (logits.argmax(-1) == ids[:, start + 1 : start + span]).float().mean().item()


def hold_copy_circuit(model: Qwen2ForCausalLM, layout: CopyLayout) -> list:
    """Keep the circuit's attention (the queries, keys and values of the KV groups its heads use,
    with grouped queries the other heads of those groups too) as built while the rest trains:
    their gradients are zeroed. What the model makes of the copy (the
    heads' outputs, the output head, everything else) is trained. Returns the hook handles."""
    head_dim, group = _heads(model.config)
    handles = []
    for layer, head in [(0, h) for h in layout.previous_heads] + [(1, layout.induction_head)]:
        attention = model.model.layers[layer].self_attn
        kv = head // group
        q_rows = slice(kv * group * head_dim, (kv + 1) * group * head_dim)
        kv_rows = _head(kv, head_dim)
        for proj, rows in ((attention.q_proj, q_rows), (attention.k_proj, kv_rows), (attention.v_proj, kv_rows)):
            for param in (proj.weight, proj.bias):
                mask = torch.ones_like(param)
                mask[rows] = 0
                handles.append(param.register_hook(lambda grad, mask=mask: grad * mask))
    return handles


@torch.no_grad()
def induction_landing(
    model: Qwen2ForCausalLM, layout: CopyLayout, *, span: int = 40, filler: int = 30, rows: int = 16, seed: int = 3
) -> float:
    """The share of a repeated random span's tokens (from the n-th on) at which the induction
    head's attention peaks on the right place of the first copy (where the token that follows
    is). Unlike ``copy_accuracy`` it does not depend on what the rest of the model makes of the
    copy: after training, a reader's output no longer follows the copy on random text while its
    induction head may still land right (a five-head reader, 900 steps: copies 0.002, lands right
    on 0.571; docs/demo-model.md)."""
    was_training, implementation = model.training, model.config._attn_implementation
    model.eval()
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    try:
        ids, start = _repeated_spans(model.config.vocab_size, rows=rows, span=span, filler=filler, seed=seed)
        attention = model(input_ids=ids, output_attentions=True).attentions[1][:, layout.induction_head]
    finally:
        model.set_attn_implementation(implementation)
        model.train(was_training)
    first = layout.context - 1
    queries = torch.arange(start + first, start + span - 1)
    right = torch.arange(first + 2, span + 1)  # token i + 1 of the first copy (after BOS)
    return (attention[:, queries].argmax(-1) == right).float().mean().item()
