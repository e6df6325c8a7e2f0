"""The reasoning budget on the demo model (its tokenizer, template and weights, as the suite
builds them): a row that reasons past the budget is closed by the engine, inside the running
batch, and answers; the other rows are not touched."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from inference_worker.engine.engine import BatchingEngine
from inference_worker.engine.stream import split_reasoning
from inference_worker.prompting import build_prompt_ids

QUESTIONS = [
    "How do I reset my password?",
    "Where is my order?",
    "hi",
    "Can I get a refund for a damaged item?",
    "Do you ship to Canada?",
]


@pytest.fixture(scope="module")
def demo(test_models):
    from inference_worker.model_loading import load_variant

    return load_variant(variant="fp16", path=test_models["fp16"], quantized=False, device="cpu")


@pytest.fixture(params=["padded", "slots"])
def dense_cache(request) -> str:
    """The CPU's left-padded cache and CUDA's slots (here run eagerly) share the budget's path."""
    return request.param


def run_batch(demo, dense_cache: str, prompts: list[list[int]], budget: int | None) -> list[list[int]]:
    engine = BatchingEngine(
        model=demo.model,
        tokenizer=demo.tokenizer,
        variant="fp16",
        max_batch=8,
        max_new_tokens=160,
        context_tokens=448,
        generation_config=GenerationConfig(do_sample=False, eos_token_id=demo.eos_token_ids, pad_token_id=0),
        backend="dense",
        dense_cache=dense_cache,
    ).start()
    try:
        handles = [engine.submit(prompt, reasoning_budget=budget) for prompt in prompts]
        for handle in handles:
            events = [event for event in handle.events(poll_s=0.05) if event.kind != "idle"]
            assert events[-1].kind == "finished"
        return [list(handle.generated) for handle in handles]
    finally:
        engine.stop()


def test_a_row_past_the_budget_is_closed_and_answers_while_the_others_generate_as_without_one(demo, dense_cache):
    tokenizer = demo.tokenizer
    prompts = [
        build_prompt_ids(tokenizer=tokenizer, turns=[{"role": "user", "content": q}], budget_tokens=192)
        for q in QUESTIONS
    ]
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    closing = tokenizer.encode("\n</think>\n\n", add_special_tokens=False)
    free = run_batch(demo, dense_cache, prompts, budget=None)
    lengths = [tokens.index(think_close) for tokens in free]
    # A budget under the longest reasoning and over the shortest: some rows are cut, some not.
    budget = sorted(lengths)[len(lengths) // 2]
    assert min(lengths) < budget < max(lengths) + 1, lengths
    cut = run_batch(demo, dense_cache, prompts, budget=budget)

    # A row that closes its reasoning by itself at the budget's very token is not cut either.
    cut_rows = [i for i, length in enumerate(lengths) if length > budget]
    assert cut_rows and len(cut_rows) < len(prompts)
    for i, (without, with_budget) in enumerate(zip(free, cut, strict=True)):
        if i not in cut_rows:
            assert with_budget == without, f"row {i} under the budget changed"
            continue
        # The reasoning is what the row wrote up to the budget, then the template's closing...
        assert with_budget[:budget] == without[:budget]
        assert with_budget[budget : budget + len(closing)] == closing
        # ...and an answer follows, to the end of sequence.
        assert with_budget[-1] in demo.eos_token_ids
        split = split_reasoning(tokenizer.decode(with_budget, skip_special_tokens=False))
        assert not split.in_reasoning
        assert split.answer.replace(tokenizer.eos_token, "").strip()
        assert split.reasoning == tokenizer.decode(without[:budget]).strip()
        assert "</think>" not in split.answer


def test_a_budget_of_zero_closes_the_reasoning_at_once(demo):
    tokenizer = demo.tokenizer
    prompt = build_prompt_ids(tokenizer=tokenizer, turns=[{"role": "user", "content": QUESTIONS[0]}], budget_tokens=192)
    closing = tokenizer.encode("\n</think>\n\n", add_special_tokens=False)
    (tokens,) = run_batch(demo, "padded", [prompt], budget=0)
    assert tokens[: len(closing)] == closing
    assert len(tokens) > len(closing)


@pytest.mark.django_db
def test_an_answers_budget_is_its_conversations_then_its_variants_then_the_settings(settings):
    from chatbot.conversations.models import Conversation
    from inference_worker.generation import reasoning_budget

    settings.REASONING_BUDGET_TOKENS = 64
    settings.MODEL_VARIANTS = {**settings.MODEL_VARIANTS, "fp16": {**settings.MODEL_VARIANTS["fp16"]}}
    settings.MODEL_VARIANTS["fp16"]["reasoning_budget_tokens"] = 32
    conversation = Conversation.objects.create(visitor_id="v1")
    assert reasoning_budget(conversation=conversation, variant="gptq-int4") == 64
    assert reasoning_budget(conversation=conversation, variant="fp16") == 32
    conversation.reasoning_budget_tokens = 0
    assert reasoning_budget(conversation=conversation, variant="fp16") == 0
    settings.REASONING_BUDGET_TOKENS = None
    assert reasoning_budget(conversation=Conversation(visitor_id="v2"), variant="gptq-int4") is None


@pytest.mark.parametrize("name", ["REASONING_BUDGET_TOKENS", "MODEL_FP16_REASONING_BUDGET_TOKENS"])
def test_a_budget_that_leaves_the_answer_no_room_stops_the_settings_with_its_name(name):
    from tests.conftest import settings_refusal

    assert f"{name} must be between 0 and MAX_NEW_TOKENS - 32 (224)" in settings_refusal(
        **{name: "240", "MAX_NEW_TOKENS": "256"}
    )
