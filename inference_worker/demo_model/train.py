"""Training the demo model: a small ``Qwen2ForCausalLM`` (the R1-Distill-Qwen architecture) on
chat-formatted support dialogues, on the CPU, deterministically from a seed.

Loss is taken on the assistant's part only: the completion (reasoning, ``</think>``, reply, a
handoff block where the answer hands off, end token) and the earlier answers in the history (each
reply and its end token): the customers' words are given at serving time, so learning to predict
them would only spend the small model's capacity on text it never has to produce, while every
earlier answer is one more example of answering a customer in the middle of a conversation.

A dialogue's prompt is built by the worker's own code (``inference_worker.prompting``) within the
demo model's prompt budget, so training sees long conversations trimmed exactly as served.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from inference_worker.demo_model.copying import (
    copy_accuracy,
    hold_copy_circuit,
    induction_landing,
    install_copy_circuit,
)
from inference_worker.demo_model.corpus import Corpus, TrainingDialogue, training_dialogues
from inference_worker.demo_model.tokenizer import ASSISTANT_TOKEN, EOS_TOKEN, MODEL_MAX_LENGTH
from inference_worker.grounding import passages_extra_tokens, prompt_tokens
from inference_worker.prompting import build_prompt_ids

QUESTION_MARK = "\n\nQuestion: "  # chatbot.knowledge.text.grounded_content's

# The demo checkpoint's own sampling (generation_config.json), which the worker uses unless
# GENERATION_TEMPERATURE / GENERATION_TOP_P say otherwise. R1's 0.6 / 0.95 is DeepSeek's advice
# for real R1-Distill checkpoints; a model this small has flatter distributions, and sampling its
# tail writes broken words, so the demo samples closer to its best token (evaluate_models checks
# sampled answers against greedy ones).
DEMO_TEMPERATURE = 0.3
DEMO_TOP_P = 0.8

# The prompt budget the worker gives the demo model with the default MAX_NEW_TOKENS (256):
# generation.prompt_budget = model_max_length - MAX_NEW_TOKENS.
TRAIN_PROMPT_TOKENS = MODEL_MAX_LENGTH - 256


@dataclass(frozen=True)
class ModelPreset:
    """Model geometry and training schedule. Linear layers' input sizes (hidden_size and
    intermediate_size) must be multiples of the GPTQ group size."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    tokenizer_vocab_size: int
    calibration_samples: int  # GPTQ calibration conversations
    log_every: int
    rope_theta: float = 10_000.0
    copy_circuit: bool = False  # copying.install_copy_circuit before training
    copy_context: int = 2  # tokens its induction head matches
    changed_figures_share: float = 0.0  # corpus.training_dialogues' share of changed figures


# Sized to train in a few minutes on two CPU cores and still answer held-out phrasings (see
# docs/demo-model.md for the build time and accuracy).
_FULL = ModelPreset(
    name="full",
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=768,
    steps=600,
    batch_size=24,
    learning_rate=2e-3,
    warmup_steps=20,
    tokenizer_vocab_size=2048,
    calibration_samples=128,
    log_every=20,
)

PRESETS: dict[str, ModelPreset] = {
    "full": _FULL,
    # The full preset with a copying circuit built in before training (copying.py) and half of
    # its grounded conversations' figures changed at random, so that it reads the figures of its
    # passages: an edited article changes its answer without the answer check. Not the default:
    # measured against "full" it follows 80% of edited articles by itself (full: none), but after
    # the answer check customers get less, and its handoff action is worse (docs/demo-model.md,
    # "A model that reads").
    "reader": replace(
        _FULL,
        name="reader",
        num_kv_heads=4,  # ungrouped: the circuit holds its heads' keys and values, no others'
        rope_theta=1_000_000.0,  # Qwen2.5's: the circuit's match needs RoPE's slow pairs
        copy_circuit=True,
        copy_context=3,
        changed_figures_share=0.5,
    ),
    # For the worker integration and browser tests: small enough to build in well under a minute,
    # trained enough to write the R1 format (reasoning, `</think>`, a reply, the end token).
    "small": ModelPreset(
        name="small",
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=384,
        steps=420,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=10,
        tokenizer_vocab_size=2048,
        calibration_samples=32,
        log_every=20,
    ),
    # Same code path in seconds, for tests: it learns little, but every file is real.
    "tiny": ModelPreset(
        name="tiny",
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=128,
        steps=12,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=2,
        tokenizer_vocab_size=2048,
        calibration_samples=16,
        log_every=4,
    ),
}


@dataclass(frozen=True)
class TrainReport:
    steps: int
    seconds: float
    final_loss: float  # mean of the last `log_every` steps' losses
    losses: tuple[tuple[int, float], ...]  # (step, mean loss since the previous entry)
    parameters: int
    # copying.copy_accuracy on random text before and after training (None: no copying circuit)
    copy_accuracy: tuple[float, float] | None = None
    # copying.induction_landing before and after training (None: no copying circuit)
    induction_landing: tuple[float, float] | None = None


def preset_by_name(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def model_config(*, preset: ModelPreset, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
    # Round the embedding up to a multiple of 64 (as Qwen pads its vocabulary); every token id
    # the tokenizer can produce, special ones included, stays inside it.
    vocab_size = math.ceil(len(tokenizer) / 64) * 64
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        hidden_act="silu",
        max_position_embeddings=MODEL_MAX_LENGTH,
        rms_norm_eps=1e-6,
        rope_theta=preset.rope_theta,
        tie_word_embeddings=False,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def generation_config(*, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=DEMO_TEMPERATURE,
        top_p=DEMO_TOP_P,
    )


@contextmanager
def deterministic_torch(*, seed: int, threads: int = 2) -> Iterator[None]:
    """Seeded, deterministic kernels, fixed thread count; restores the process' settings after,
    since the build may run inside a longer-lived process (tests, a management command)."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def encode_dialogue(
    *, tokenizer: PreTrainedTokenizerBase, dialogue: TrainingDialogue, budget_tokens: int = TRAIN_PROMPT_TOKENS
) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the worker builds it (trimmed to ``budget_tokens``),
    then the completion. Labels: the completion and the history's answers; the rest -100.

    Prompt and completion are tokenized separately, exactly as at serving time, where the model
    continues the prompt's ids.
    """
    system = "".join(m["content"] for m in dialogue.messages if m["role"] == "system")
    turns = [m for m in dialogue.messages if m["role"] != "system"]
    extra = 0
    if dialogue.passages is not None:  # the passages' share comes on top of the conversation's
        content = turns[-1]["content"]
        extra = passages_extra_tokens(tokenizer, content, content.rsplit(QUESTION_MARK, 1)[-1])
    prompt = build_prompt_ids(
        tokenizer=tokenizer, turns=turns, budget_tokens=prompt_tokens(budget_tokens, extra), system_prompt=system
    )
    completion = tokenizer(dialogue.completion + EOS_TOKEN, add_special_tokens=False)["input_ids"]
    labels = _history_labels(
        prompt,
        assistant_id=tokenizer.convert_tokens_to_ids(ASSISTANT_TOKEN),
        eos_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
    )
    return prompt + completion, labels + completion


def _history_labels(prompt: list[int], *, assistant_id: int, eos_id: int) -> list[int]:
    """-100 everywhere but the earlier answers: each span after an assistant marker up to and
    including its end token (the prompt's final assistant marker opens the completion)."""
    labels = [-100] * len(prompt)
    inside = False
    for index, token in enumerate(prompt):
        if inside:
            labels[index] = token
            inside = token != eos_id
        elif token == assistant_id:
            inside = True
    if inside:  # the generation prompt's `<｜Assistant｜><think>\n`: given, not learned
        end = len(prompt) - 1
        while end >= 0 and labels[end] != -100:
            labels[end] = -100
            end -= 1
    return labels


def _batches(
    *, encoded: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random
) -> list[list[tuple[list[int], list[int]]]]:
    """Batches of similar lengths (less padding, so less compute), in random order."""
    batches = []
    window = batch_size * 8
    for start in range(0, len(encoded), window):
        chunk = sorted(encoded[start : start + window], key=lambda pair: len(pair[0]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(
    batch: list[tuple[list[int], list[int]]], *, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention


def _lr_factor(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(
    *,
    tokenizer: PreTrainedTokenizerBase,
    corpus: Corpus,
    preset: ModelPreset,
    seed: int,
    log: Callable[[str], None],
) -> tuple[Qwen2ForCausalLM, TrainReport]:
    """Train a fresh model; returns it in float32 with the training report."""
    with deterministic_torch(seed=seed):
        started = time.monotonic()
        rng = random.Random(seed)
        dialogues = training_dialogues(
            corpus=corpus,
            count=preset.steps * preset.batch_size,
            seed=seed,
            changed_figures_share=preset.changed_figures_share,
        )
        encoded = [encode_dialogue(tokenizer=tokenizer, dialogue=d) for d in dialogues]
        batches = _batches(encoded=encoded, batch_size=preset.batch_size, rng=rng)

        config = model_config(preset=preset, tokenizer=tokenizer)
        model = Qwen2ForCausalLM(config)
        copied_before = None
        layout = install_copy_circuit(model, context=preset.copy_context) if preset.copy_circuit else None
        if layout is not None:
            hold_copy_circuit(model, layout)
            copied_before, landing_before = copy_accuracy(model), induction_landing(model, layout)
            log(
                f"copying circuit installed: copies {copied_before:.3f} of a repeated random span, "
                f"its induction head lands right on {landing_before:.3f}"
            )
        model.train()
        parameters = sum(p.numel() for p in model.parameters())
        log(
            f"model: hidden {preset.hidden_size}, {preset.num_layers} layers, "
            f"{parameters / 1e6:.2f} M parameters, vocab {config.vocab_size}; "
            f"{preset.steps} steps x {preset.batch_size} dialogues"
        )
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
            lr=preset.learning_rate,
            betas=(0.9, 0.95),
        )
        losses: list[tuple[int, float]] = []
        window: list[float] = []
        for step, batch in enumerate(batches[: preset.steps]):
            factor = _lr_factor(step, warmup=preset.warmup_steps, total=preset.steps)
            for group in optimizer.param_groups:
                group["lr"] = preset.learning_rate * factor
            input_ids, labels, attention = _collate(batch, pad_id=tokenizer.pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.item())
            if (step + 1) % preset.log_every == 0 or step + 1 == preset.steps:
                mean = sum(window) / len(window)
                losses.append((step + 1, mean))
                log(
                    f"  step {step + 1:4d}/{preset.steps}  loss {mean:.4f}  "
                    f"lr {preset.learning_rate * factor:.2e}  {time.monotonic() - started:.0f} s"
                )
                window = []
        model.eval()
        copied = landing = None
        if copied_before is not None:
            copied = (copied_before, copy_accuracy(model))
            landing = (landing_before, induction_landing(model, layout))
            log(
                f"after training the model copies {copied[1]:.3f} of a repeated random span, "
                f"its induction head lands right on {landing[1]:.3f}"
            )
        report = TrainReport(
            steps=preset.steps,
            seconds=time.monotonic() - started,
            final_loss=losses[-1][1],
            losses=tuple(losses),
            parameters=parameters,
            copy_accuracy=copied,
            induction_landing=landing,
        )
        return model, report


def save_fp16(
    *,
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
) -> None:
    """Weights in float16 (safetensors), config, R1 generation config and the tokenizer."""
    model.to(torch.float16)
    model.config.dtype = torch.float16
    model.generation_config = generation_config(tokenizer=tokenizer)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def preset_summary(preset: ModelPreset) -> dict[str, object]:
    return asdict(preset)
