"""Evaluating the demo model's two variants (FP16 and GPTQ 4-bit) on the held-out questions.

What is measured, precisely:

* **Generation** is greedy (``do_sample=False``), batched with left padding, at most
  ``max_new_tokens`` new tokens; a sequence ends at its first ``<｜end▁of▁sentence｜>`` (kept).
* **Reply**: the text decoded (special tokens skipped) from the tokens after the first
  ``</think>`` token up to the end token, stripped. Without a ``</think>`` the whole output is
  the reply (and counts under ``missing_think_close``).
* **Intent accuracy**: a reply is correct iff its *normalized* text (lowercased, whitespace runs
  collapsed, ends stripped) equals the normalized canonical reply of the expected intent.
  For misses, ``predicted`` names the canonical reply with the highest word-set Jaccard overlap,
  for diagnosis only.
* **Think leaks**: replies that contain ``<think>`` or ``</think>`` text.
* **Mean answer tokens**: new tokens per question up to and including the end token
  (``mean_generated_tokens``) and in the reply alone (``mean_reply_tokens``).
* **Tokens/s**: all generated tokens (padding after a row's end not counted) / wall time of the
  batched generation.
* **Greedy token agreement** between variants, per prompt: the length of the common prefix of
  the two generated sequences divided by the longer sequence's length (1.0 iff identical; a
  sequence that stops early while the other continues counts as disagreement); reported as the
  mean over prompts, with the fraction of prompts whose sequences are identical.
* **Logits relative error**, per prompt: ``||a - b||₂ / ||a||₂`` of the last prompt position's
  logits (float32), ``a`` from FP16, ``b`` from GPTQ, the same token ids for both; mean over
  prompts.

``extra_prompts`` (conversations without an expected answer, e.g. recent real customer
questions) get only agreement and logits error; their text is never put into the report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inference_worker.demo_model.corpus import HeldoutExample, load_corpus
from inference_worker.demo_model.tokenizer import THINK_END, THINK_START, encode_prompt

FP16_MIN_ACCURACY = 0.80
GPTQ_MIN_ACCURACY_RATIO = 0.95
DEFAULT_MAX_NEW_TOKENS = 160
DEFAULT_BATCH_SIZE = 32
_MISSES_REPORTED = 20

Message = dict[str, str]


@dataclass
class LoadedPair:
    """A model with its tokenizer, as evaluation uses them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


@dataclass(frozen=True)
class ParsedAnswer:
    reasoning: str
    reply: str
    reply_tokens: int
    closed_think: bool
    ended: bool


def load_for_eval(path: Path | str, quantized: bool) -> LoadedPair:
    """FP16 checkpoints run in float32 (the CPU's fast path, and the reference for the
    comparison); GPTQ checkpoints in bfloat16 (the int4 CPU kernel is far slower in float32)."""
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16 if quantized else torch.float32, device_map="cpu"
    )
    model.eval()
    return LoadedPair(model=model, tokenizer=tokenizer, name="gptq-int4" if quantized else "fp16")


# --- pure computations ----------------------------------------------------------------------


def normalize_reply(text: str) -> str:
    return " ".join(text.lower().split())


def reply_matches(*, reply: str, expected: str) -> bool:
    return normalize_reply(reply) == normalize_reply(expected)


def has_think_leak(reply: str) -> bool:
    return THINK_START in reply or THINK_END in reply


def closest_answer(*, reply: str, canonical: dict[str, str]) -> str | None:
    """The answer id whose canonical reply shares the most words with ``reply`` (Jaccard)."""
    words = set(re.findall(r"\w+", reply.lower()))
    best, best_score = None, 0.0
    for answer_id, text in canonical.items():
        other = set(re.findall(r"\w+", text.lower()))
        union = words | other
        score = len(words & other) / len(union) if union else 0.0
        if score > best_score:
            best, best_score = answer_id, score
    return best


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Common-prefix length over the longer sequence's length; 1.0 for two empty sequences."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    prefix = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix += 1
    return prefix / longest


def logits_relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference = reference.detach().to(torch.float64)
    other = other.detach().to(torch.float64)
    return float(torch.linalg.vector_norm(reference - other) / torch.linalg.vector_norm(reference))


def parse_answer(*, tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> ParsedAnswer:
    end_id = tokenizer.eos_token_id
    think_end_id = tokenizer.convert_tokens_to_ids(THINK_END)
    ids = list(token_ids)
    ended = bool(ids) and ids[-1] == end_id
    if ended:
        ids = ids[:-1]
    if think_end_id in ids:
        cut = ids.index(think_end_id)
        reasoning_ids, reply_ids, closed = ids[:cut], ids[cut + 1 :], True
    else:
        reasoning_ids, reply_ids, closed = [], ids, False
    return ParsedAnswer(
        reasoning=tokenizer.decode(reasoning_ids, skip_special_tokens=True).strip(),
        reply=tokenizer.decode(reply_ids, skip_special_tokens=True).strip(),
        reply_tokens=len(reply_ids),
        closed_think=closed,
        ended=ended,
    )


# --- model runs -----------------------------------------------------------------------------


def _left_pad(prompts: Sequence[Sequence[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt))
            attention[row, width - len(prompt) :] = 1
    return input_ids, attention


def _length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped by prompt length, so left padding stays short."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate_greedy(
    *,
    pair: LoadedPair,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[list[list[int]], float]:
    """Greedy continuations of ``prompts`` (token ids), each cut after its first end token;
    returns them in input order with the total generation wall time."""
    tokenizer = pair.tokenizer
    outputs: list[list[int]] = [[] for _ in prompts]
    seconds = 0.0
    for indices in _length_batches(prompts, batch_size):
        input_ids, attention = _left_pad([prompts[i] for i in indices], pad_id=tokenizer.pad_token_id)
        started = time.perf_counter()
        generated = pair.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        seconds += time.perf_counter() - started
        for row, index in enumerate(indices):
            new = generated[row, input_ids.shape[1] :].tolist()
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id) + 1]
            outputs[index] = new
    return outputs, seconds


@torch.inference_mode()
def last_position_logits(
    *, pair: LoadedPair, prompts: Sequence[Sequence[int]], batch_size: int = DEFAULT_BATCH_SIZE
) -> list[torch.Tensor]:
    """Float32 logits at each prompt's last token, in input order."""
    results: list[torch.Tensor] = [torch.empty(0) for _ in prompts]
    for indices in _length_batches(prompts, batch_size):
        input_ids, attention = _left_pad([prompts[i] for i in indices], pad_id=pair.tokenizer.pad_token_id)
        # Positions count real tokens only, as in generation, so padding does not shift RoPE.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = pair.model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits
        for row, index in enumerate(indices):
            results[index] = logits[row, -1].float()
    return results


def evaluate_variant(
    *,
    pair: LoadedPair,
    heldout: Sequence[HeldoutExample],
    canonical: dict[str, str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[dict[str, object], list[list[int]]]:
    """Accuracy and output statistics of one variant; also returns the generated ids."""
    prompts = [encode_prompt(pair.tokenizer, example.messages) for example in heldout]
    outputs, seconds = generate_greedy(pair=pair, prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    correct = leaks = unclosed = unfinished = reply_tokens = 0
    misses: list[dict[str, object]] = []
    for example, output in zip(heldout, outputs, strict=True):
        answer = parse_answer(tokenizer=pair.tokenizer, token_ids=output)
        ok = reply_matches(reply=answer.reply, expected=example.expected_reply)
        correct += ok
        leaks += has_think_leak(answer.reply)
        unclosed += not answer.closed_think
        unfinished += not answer.ended
        reply_tokens += answer.reply_tokens
        if not ok and len(misses) < _MISSES_REPORTED:
            misses.append(
                {
                    "expected": example.intent_id,
                    "predicted": closest_answer(reply=answer.reply, canonical=canonical),
                    "question": example.messages[-1]["content"],
                    "reply": answer.reply[:160],
                }
            )
    total_tokens = sum(len(o) for o in outputs)
    count = max(1, len(heldout))
    result = {
        "examples": len(heldout),
        "correct": correct,
        "accuracy": correct / count,
        "think_leaks": leaks,
        "missing_think_close": unclosed,
        "unfinished": unfinished,
        "mean_generated_tokens": total_tokens / count,
        "mean_reply_tokens": reply_tokens / count,
        "generated_tokens": total_tokens,
        "generation_seconds": round(seconds, 3),
        "tokens_per_second": total_tokens / seconds if seconds > 0 else 0.0,
        "misses": misses,
    }
    return result, outputs


def agreement_figures(
    *,
    fp16: LoadedPair,
    gptq: LoadedPair,
    prompts: Sequence[Sequence[int]],
    fp16_outputs: Sequence[Sequence[int]] | None = None,
    gptq_outputs: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, object]:
    """Greedy agreement and logits error of two variants on the same prompt ids; generations
    already made (for the held-out set) are reused."""
    if not prompts:
        return {"prompts": 0}
    if fp16_outputs is None:
        fp16_outputs, _ = generate_greedy(
            pair=fp16, prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    if gptq_outputs is None:
        gptq_outputs, _ = generate_greedy(
            pair=gptq, prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    agreements = [token_agreement(a, b) for a, b in zip(fp16_outputs, gptq_outputs, strict=True)]
    reference = last_position_logits(pair=fp16, prompts=prompts, batch_size=batch_size)
    other = last_position_logits(pair=gptq, prompts=prompts, batch_size=batch_size)
    errors = [logits_relative_error(a, b) for a, b in zip(reference, other, strict=True)]
    return {
        "prompts": len(prompts),
        "greedy_token_agreement": sum(agreements) / len(agreements),
        "identical_sequences": sum(a == 1.0 for a in agreements) / len(agreements),
        "logits_relative_error": sum(errors) / len(errors),
        "logits_relative_error_max": max(errors),
    }


def compare_variants(
    *,
    fp16: LoadedPair,
    gptq: LoadedPair,
    heldout: Sequence[HeldoutExample],
    extra_prompts: Sequence[Sequence[Message]] = (),
    limit: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, object]:
    """The full evaluation report (a JSON-serialisable dict) with pass/fail."""
    heldout = list(heldout)[:limit] if limit is not None else list(heldout)
    canonical = load_corpus().canonical_replies()
    _check_same_tokenization(fp16=fp16, gptq=gptq, heldout=heldout)

    fp16_result, fp16_outputs = evaluate_variant(
        pair=fp16, heldout=heldout, canonical=canonical, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    gptq_result, gptq_outputs = evaluate_variant(
        pair=gptq, heldout=heldout, canonical=canonical, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    prompts = [encode_prompt(fp16.tokenizer, example.messages) for example in heldout]
    comparison = {
        "heldout": agreement_figures(
            fp16=fp16,
            gptq=gptq,
            prompts=prompts,
            fp16_outputs=fp16_outputs,
            gptq_outputs=gptq_outputs,
            batch_size=batch_size,
        ),
        "extra": agreement_figures(
            fp16=fp16,
            gptq=gptq,
            prompts=[encode_prompt(fp16.tokenizer, messages) for messages in extra_prompts],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        ),
    }
    failures = []
    if fp16_result["accuracy"] < FP16_MIN_ACCURACY:
        failures.append(f"fp16 accuracy {fp16_result['accuracy']:.3f} < {FP16_MIN_ACCURACY}")
    gptq_floor = GPTQ_MIN_ACCURACY_RATIO * fp16_result["accuracy"]
    if gptq_result["accuracy"] < gptq_floor:
        failures.append(f"gptq-int4 accuracy {gptq_result['accuracy']:.3f} < {gptq_floor:.3f}")
    return {
        "examples": len(heldout),
        "max_new_tokens": max_new_tokens,
        "variants": {fp16.name: fp16_result, gptq.name: gptq_result},
        "comparison": comparison,
        "thresholds": {
            "fp16_min_accuracy": FP16_MIN_ACCURACY,
            "gptq_min_accuracy_ratio_to_fp16": GPTQ_MIN_ACCURACY_RATIO,
        },
        "passed": not failures,
        "failures": failures,
    }


def _check_same_tokenization(*, fp16: LoadedPair, gptq: LoadedPair, heldout: Sequence[HeldoutExample]) -> None:
    """Both variants are fed the FP16 tokenizer's ids; refuse if the GPTQ one would differ."""
    for example in heldout[:8]:
        if encode_prompt(fp16.tokenizer, example.messages) != encode_prompt(gptq.tokenizer, example.messages):
            raise ValueError("the two variants tokenize the same conversation differently")


def evaluate_models(
    *,
    fp16_path: Path,
    gptq_path: Path,
    limit: int | None = None,
    extra_prompts: Sequence[Sequence[Message]] = (),
) -> dict[str, object]:
    from inference_worker.demo_model.corpus import heldout_examples

    fp16 = load_for_eval(fp16_path, quantized=False)
    gptq = load_for_eval(gptq_path, quantized=True)
    return compare_variants(fp16=fp16, gptq=gptq, heldout=heldout_examples(), extra_prompts=extra_prompts, limit=limit)
