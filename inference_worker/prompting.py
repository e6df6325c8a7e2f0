"""Building the model's prompt from the conversation, within the context budget."""

from __future__ import annotations

from typing import Any


def chat_template_ids(tokenizer: Any, turns: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation in the model's chat template, ending with the generation prompt."""
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding here; older versions a plain list.
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def build_prompt_ids(
    *, tokenizer: Any, turns: list[dict[str, str]], budget_tokens: int, system_prompt: str = ""
) -> list[int]:
    """Token ids of the chat-templated conversation, ending with the generation prompt
    (`<｜Assistant｜><think>\\n` for R1). Oldest turns are dropped until it fits the budget; the
    last customer turn is always kept, cut from its start if it alone is too long."""
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the conversation must end with a customer (user) turn")
    prefix = [{"role": "system", "content": system_prompt}] if system_prompt else []
    kept = list(turns)
    while True:
        ids = chat_template_ids(tokenizer, prefix + kept)
        if len(ids) <= budget_tokens or len(kept) == 1:
            break
        # Drop the oldest exchange, so the history still starts with a customer turn.
        kept = kept[1:]
        while len(kept) > 1 and kept[0]["role"] != "user":
            kept = kept[1:]
    if len(ids) > budget_tokens:
        # One very long message: keep its end (the question usually comes last).
        content_ids = tokenizer(kept[0]["content"], add_special_tokens=False)["input_ids"]
        overflow = len(ids) - budget_tokens
        kept = [{"role": "user", "content": tokenizer.decode(content_ids[overflow + 1 :])}]
        ids = chat_template_ids(tokenizer, prefix + kept)[-budget_tokens:]
    return ids
