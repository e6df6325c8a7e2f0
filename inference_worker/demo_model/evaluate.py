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

* **Handoff**: an answer hands off iff it has the action block (``<handoff>reason</handoff>``,
  inference_worker/handoff.py); the reply is the text before the block. An answer is correct iff
  its reply matches *and* it hands off exactly when the expected answer does. Precision and
  recall of the action count every answer (single questions and conversations' turns).
* **Conversations** (``evaluate_conversations``): held-out multi-turn conversations (1-10
  turns, held-out phrasings only), run turn by turn as the product runs them: each turn's prompt
  is the conversation so far with the model's *own* earlier replies (as the worker stores them:
  the reply without reasoning or action), trimmed to the prompt budget by the worker's code
  (``build_prompt_ids``). Accuracy is reported by the turn's position (1, 2-3, 4-6, 7-10),
  under greedy decoding and under the variant's own sampling (the checkpoint's
  generation_config unless the settings override it), sampled runs seeded.

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

from inference_worker.demo_model.corpus import HeldoutConversation, HeldoutExample, load_corpus
from inference_worker.demo_model.tokenizer import THINK_END, THINK_START, encode_prompt
from inference_worker.demo_model.train import TRAIN_PROMPT_TOKENS
from inference_worker.engine_factory import Sampling, checkpoint_sampling
from inference_worker.grounding import prompt_tokens
from inference_worker.handoff import HANDOFF_OPEN, parse_handoff
from inference_worker.prompting import build_prompt_ids

FP16_MIN_ACCURACY = 0.80
GPTQ_MIN_ACCURACY_RATIO = 0.95
# Conversations, by the turn's position.
TURN_BUCKETS: tuple[tuple[str, int, int], ...] = (("1", 1, 1), ("2-3", 2, 3), ("4-6", 4, 6), ("7-10", 7, 10))
FP16_MIN_TURN_ACCURACY = 0.90  # every bucket, greedy
MAX_LATE_TURN_DROP = 0.03  # FP16 greedy: turns 7-10 at most this far below turn 1
GPTQ_MIN_TURN_RATIO = 0.97  # GPTQ / FP16, every bucket, greedy
MAX_SAMPLED_DROP = 0.03  # sampled accuracy (all turns) at most this far below greedy, each variant
SAMPLING_SEED = 7
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
    reply: str  # without the handoff block
    reply_tokens: int
    closed_think: bool
    ended: bool
    handoff: str | None = None  # the action's reason, None when the answer does not hand off


@dataclass
class HandoffCounts:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    def add(self, *, expected: bool, predicted: bool) -> None:
        self.true_positive += expected and predicted
        self.false_positive += predicted and not expected
        self.false_negative += expected and not predicted

    def to_dict(self) -> dict[str, object]:
        predicted = self.true_positive + self.false_positive
        expected = self.true_positive + self.false_negative
        return {
            "true_positive": self.true_positive,
            "false_positive": self.false_positive,
            "false_negative": self.false_negative,
            "precision": self.true_positive / predicted if predicted else 1.0,
            "recall": self.true_positive / expected if expected else 1.0,
        }


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
    text = tokenizer.decode(reply_ids, skip_special_tokens=True)
    reply, opened, _ = text.partition(HANDOFF_OPEN)
    action = parse_handoff(text[len(reply) :]) if opened else None
    return ParsedAnswer(
        reasoning=tokenizer.decode(reasoning_ids, skip_special_tokens=True).strip(),
        reply=reply.strip(),
        reply_tokens=len(reply_ids),
        closed_think=closed,
        ended=ended,
        handoff=action.reason if action else None,
    )


def answer_correct(answer: ParsedAnswer, *, expected_reply: str, expected_handoff: str) -> bool:
    """The right reply, and a handoff exactly where one is expected."""
    return reply_matches(reply=answer.reply, expected=expected_reply) and (answer.handoff is not None) == bool(
        expected_handoff
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
    sampling: Sampling | None = None,
    seed: int = SAMPLING_SEED,
) -> tuple[list[list[int]], float]:
    """Continuations of ``prompts`` (token ids), greedy or with ``sampling`` (seeded per batch),
    each cut after its first end token; returns them in input order with the total generation
    wall time."""
    tokenizer = pair.tokenizer
    outputs: list[list[int]] = [[] for _ in prompts]
    seconds = 0.0
    sample = sampling is not None and sampling.temperature > 0
    for batch, indices in enumerate(_length_batches(prompts, batch_size)):
        input_ids, attention = _left_pad([prompts[i] for i in indices], pad_id=tokenizer.pad_token_id)
        if sample:
            torch.manual_seed(seed * 1000 + batch)
        started = time.perf_counter()
        generated = pair.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
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
    handoffs = HandoffCounts()
    for example, output in zip(heldout, outputs, strict=True):
        answer = parse_answer(tokenizer=pair.tokenizer, token_ids=output)
        ok = answer_correct(answer, expected_reply=example.expected_reply, expected_handoff=example.handoff)
        handoffs.add(expected=bool(example.handoff), predicted=answer.handoff is not None)
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
        "handoff": handoffs.to_dict(),
        "misses": misses,
    }
    return result, outputs


def turn_bucket(position: int) -> str:
    for name, low, high in TURN_BUCKETS:
        if low <= position <= high:
            return name
    raise ValueError(f"turn {position} is in no bucket")


def evaluate_conversations(
    *,
    pair: LoadedPair,
    conversations: Sequence[HeldoutConversation],
    budget_tokens: int,
    canonical: dict[str, str],
    sampling: Sampling | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, object]:
    """Run every conversation turn by turn (all conversations' turn t in one batched pass) with
    the model's own earlier replies as history; accuracy by turn bucket and the handoff counts."""
    tokenizer = pair.tokenizer
    histories: list[list[Message]] = [[] for _ in conversations]
    buckets = {name: [0, 0] for name, _, _ in TURN_BUCKETS}  # name -> [correct, turns]
    handoffs = HandoffCounts()
    misses: list[dict[str, object]] = []
    longest = max((len(c.turns) for c in conversations), default=0)
    for position in range(longest):
        active = [i for i, c in enumerate(conversations) if len(c.turns) > position]
        turns = [conversations[i].turns[position] for i in active]
        prompts = [
            build_prompt_ids(
                tokenizer=tokenizer,
                turns=[*histories[i], {"role": "user", "content": turn.question}],
                # without a knowledge base the conversation keeps to its part of the budget
                budget_tokens=prompt_tokens(budget_tokens),
            )
            for i, turn in zip(active, turns, strict=True)
        ]
        outputs, _ = generate_greedy(
            pair=pair,
            prompts=prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            sampling=sampling,
            seed=SAMPLING_SEED + position,
        )
        bucket = buckets[turn_bucket(position + 1)]
        for i, turn, output in zip(active, turns, outputs, strict=True):
            answer = parse_answer(tokenizer=tokenizer, token_ids=output)
            ok = answer_correct(answer, expected_reply=turn.reply, expected_handoff=turn.handoff)
            bucket[0] += ok
            bucket[1] += 1
            handoffs.add(expected=bool(turn.handoff), predicted=answer.handoff is not None)
            if not ok and len(misses) < _MISSES_REPORTED:
                misses.append(
                    {
                        "conversation": i,
                        "turn": position + 1,
                        "expected": turn.answer_id,
                        "predicted": closest_answer(reply=answer.reply, canonical=canonical),
                        "question": turn.question,
                        "reply": answer.reply[:160],
                        "handoff": answer.handoff,
                    }
                )
            histories[i] += [
                {"role": "user", "content": turn.question},
                {"role": "assistant", "content": answer.reply},
            ]
    correct = sum(c for c, _ in buckets.values())
    total = sum(n for _, n in buckets.values())
    return {
        "conversations": len(conversations),
        "turns": total,
        "accuracy": correct / total if total else 0.0,
        "by_turn": {
            name: {"correct": c, "turns": n, "accuracy": c / n if n else 0.0} for name, (c, n) in buckets.items()
        },
        "handoff": handoffs.to_dict(),
        "sampling": None if sampling is None else {"temperature": sampling.temperature, "top_p": sampling.top_p},
        "misses": misses,
    }


def multi_turn_failures(conversations: dict[str, dict[str, dict[str, object]]]) -> list[str]:
    """The thresholds on ``{variant: {"greedy": report, "sampled": report}}`` (see the module
    docstring); an empty list when they pass."""
    failures: list[str] = []
    fp16 = conversations.get("fp16", {}).get("greedy")
    if fp16 is not None:
        by_turn = fp16["by_turn"]
        for name, figures in by_turn.items():
            if figures["turns"] and figures["accuracy"] < FP16_MIN_TURN_ACCURACY:
                failures.append(f"fp16 turns {name}: accuracy {figures['accuracy']:.3f} < {FP16_MIN_TURN_ACCURACY}")
        first, late = by_turn["1"], by_turn["7-10"]
        if first["turns"] and late["turns"] and late["accuracy"] < first["accuracy"] - MAX_LATE_TURN_DROP:
            failures.append(
                f"fp16 turns 7-10: accuracy {late['accuracy']:.3f} more than {MAX_LATE_TURN_DROP} below "
                f"turn 1's {first['accuracy']:.3f}"
            )
        gptq = conversations.get("gptq-int4", {}).get("greedy")
        if gptq is not None:
            for name, figures in gptq["by_turn"].items():
                floor = GPTQ_MIN_TURN_RATIO * by_turn[name]["accuracy"]
                if figures["turns"] and figures["accuracy"] < floor:
                    failures.append(f"gptq-int4 turns {name}: accuracy {figures['accuracy']:.3f} < {floor:.3f}")
    for variant, runs in conversations.items():
        greedy, sampled = runs.get("greedy"), runs.get("sampled")
        if greedy and sampled and sampled["accuracy"] < greedy["accuracy"] - MAX_SAMPLED_DROP:
            failures.append(
                f"{variant} sampled accuracy {sampled['accuracy']:.3f} more than {MAX_SAMPLED_DROP} below "
                f"greedy {greedy['accuracy']:.3f}"
            )
    return failures


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
    conversations: Sequence[HeldoutConversation] = (),
    budget_tokens: int = TRAIN_PROMPT_TOKENS,
    sampling: dict[str, Sampling] | None = None,
    grounding: bool = True,
) -> dict[str, object]:
    """The full evaluation report (a JSON-serialisable dict) with pass/fail. ``sampling``: each
    variant's sampling (default: its checkpoint's generation config); ``limit`` also caps the
    conversations."""
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
    conversations = list(conversations)[:limit] if limit is not None else list(conversations)
    multi_turn: dict[str, dict[str, dict[str, object]]] = {}
    if conversations:
        for pair in (fp16, gptq):
            chosen = (sampling or {}).get(pair.name) or checkpoint_sampling(pair.model.generation_config)
            runs = {"greedy": None, "sampled": chosen if chosen.temperature > 0 else None}
            multi_turn[pair.name] = {
                run: evaluate_conversations(
                    pair=pair,
                    conversations=conversations,
                    budget_tokens=budget_tokens,
                    canonical=canonical,
                    sampling=how,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                )
                for run, how in runs.items()
                if run == "greedy" or how is not None
            }
    failures = multi_turn_failures(multi_turn)
    grounded: dict[str, dict[str, object]] = {}
    if grounding:
        from inference_worker.demo_model.evaluate_grounding import evaluate_grounding, grounding_failures

        for pair in (fp16, gptq):
            grounded[pair.name] = evaluate_grounding(
                pair=pair,
                heldout=heldout,
                budget_tokens=budget_tokens,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
        failures += grounding_failures(grounded)
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
        "conversations": multi_turn,
        "grounding": grounded,
        "prompt_budget_tokens": budget_tokens,
        "thresholds": {
            "fp16_min_accuracy": FP16_MIN_ACCURACY,
            "gptq_min_accuracy_ratio_to_fp16": GPTQ_MIN_ACCURACY_RATIO,
            "fp16_min_turn_accuracy": FP16_MIN_TURN_ACCURACY,
            "max_late_turn_drop": MAX_LATE_TURN_DROP,
            "gptq_min_turn_ratio_to_fp16": GPTQ_MIN_TURN_RATIO,
            "max_sampled_drop": MAX_SAMPLED_DROP,
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
    budget_tokens: int = TRAIN_PROMPT_TOKENS,
    sampling: dict[str, Sampling] | None = None,
    conversations: bool = True,
    grounding: bool = True,
) -> dict[str, object]:
    from inference_worker.demo_model.corpus import heldout_conversations, heldout_examples

    fp16 = load_for_eval(fp16_path, quantized=False)
    gptq = load_for_eval(gptq_path, quantized=True)
    return compare_variants(
        fp16=fp16,
        gptq=gptq,
        heldout=heldout_examples(),
        extra_prompts=extra_prompts,
        limit=limit,
        conversations=heldout_conversations() if conversations else (),
        budget_tokens=budget_tokens,
        sampling=sampling,
        grounding=grounding,
    )
