"""Building the model's prompt from the conversation, within the context budget."""

from __future__ import annotations

from typing import Any


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
        ids = tokenizer.apply_chat_template(prefix + kept, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
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
        ids = tokenizer.apply_chat_template(prefix + kept, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        ids = ids[-budget_tokens:]
    return ids
