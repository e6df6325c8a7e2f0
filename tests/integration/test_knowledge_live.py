"""Answers grounded in the knowledge base, through the real worker, socket and test model: the
answer cites its passage, the chat gets it as a link to the help page, and editing the article
changes the next answer without retraining."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Conversation, Message
from chatbot.knowledge.models import Article
from chatbot.knowledge.services import article_save, articles_import
from inference_worker.demo_model.corpus import ARTICLES_DIR, NOT_FOUND_REPLY
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

QUESTION = "How many days do I have to return something?"


async def ask(customer, text: str, client_id: str) -> dict:
    saved = await send_message(customer, text, client_id=client_id)
    assert saved["type"] == "message.saved", saved
    events = await collect_until(customer, {"answer.done", "generation.failed"})
    assert events[-1]["type"] == "answer.done", events[-1]
    return events[-1]["message"]


@database_sync_to_async
def edit_returns(old: str, new: str) -> None:
    article = Article.objects.get(slug="returns")
    assert old in article.body
    article_save(
        article=article,
        slug=article.slug,
        title=article.title,
        body=article.body.replace(old, new),
        published=True,
    )


@database_sync_to_async
def stored(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


async def test_an_edited_article_changes_the_next_answer_and_the_chat_links_its_source(live_worker):
    await database_sync_to_async(articles_import)(folder=ARTICLES_DIR)
    customer, _ = await new_customer()

    first = await ask(customer, QUESTION, "q1")
    assert "within 30 days" in first["text"], first["text"]
    # The answer cites its passage ("... [n]"), and the chat gets it as a link to the help page.
    assert [(s["heading"], s["url"]) for s in first["sources"]] == [("Return window", "/help/returns#return-window")]
    assert f"[{first['sources'][0]['n']}]" in first["text"]
    message = await stored(first["id"])
    cited = [p for p in message.passages if p["cited"]]
    assert cited and cited[0]["slug"] == "returns" and "within 30 days" in cited[0]["text"]

    # Staff change the return window in the admin: the next answer says so, no retraining.
    await edit_returns("within 30 days", "within 45 days")
    await customer.disconnect()
    customer, _ = await new_customer()  # the next customer who asks
    second = await ask(customer, QUESTION, "q2")
    assert "within 45 days" in second["text"] and "30 days" not in second["text"], second["text"]
    assert second["sources"] and second["sources"][0]["url"] == "/help/returns#return-window"
    message = await stored(second["id"])
    assert any(p["cited"] and "within 45 days" in p["text"] for p in message.passages)
    # The first answer keeps the passage as it was when it was given.
    assert "within 30 days" in [p for p in (await stored(first["id"])).passages if p["cited"]][0]["text"]
    await customer.disconnect()


async def test_a_question_the_help_center_cannot_answer_goes_to_a_person(live_worker):
    await database_sync_to_async(articles_import)(folder=ARTICLES_DIR)
    # The return window's section is gone from the help center.
    await edit_returns(
        "## Return window\n\nYou can return unused items in their original packaging within 30 days: open Account > "
        "Orders, choose Return, and print the free return label.",
        "",
    )
    customer, _ = await new_customer()
    answer = await ask(customer, QUESTION, "q1")
    assert answer["text"] == NOT_FOUND_REPLY and answer["sources"] == []
    updated = await collect_until(customer, {"conversation.updated"}, timeout=10)
    assert updated[-1]["conversation"]["status"] == "waiting_for_agent"
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=updated[-1]["conversation"]["id"])
    assert conversation.handoff_detail.startswith("not_in_help_center")
    await customer.disconnect()
