"""End to end in a real browser: the customer's rating of a resolved conversation. The customer
ends the chat themselves ("This solved my problem") and rates it with the keyboard; an agent
resolves it at the desk and the customer's open page asks for the rating live. On the web
server, Redis, the worker and the model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

from chatbot.conversations.models import Conversation, Rating
from chatbot.conversations.services import desk

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOT_DONE = "#messages .message--bot:not(.message--streaming) .message__text"
ERROR_NOTICE = "#messages .notice--error"


def record_problems(page) -> list[str]:
    """The console errors and uncaught exceptions `page` logs from now on."""
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    return problems


def open_chat(context, live_server_url):
    page = context.new_page()
    problems = record_problems(page)
    page.goto(live_server_url + "/")
    page.wait_for_selector("#connection-status:has-text('Connected')")
    return page, problems


def wait_for_answer(page) -> None:
    page.wait_for_selector(f"{BOT_DONE}, {ERROR_NOTICE}", timeout=120_000)
    assert not page.locator(ERROR_NOTICE).all_inner_texts()


def in_thread(function, **kwargs):
    """Runs a service in a thread of its own: Playwright's sync API keeps an event loop in this
    one, where the services' events (async_to_sync to the channel layer) could not be sent."""

    def run():
        try:
            return function(**kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def test_a_customer_ends_the_chat_rates_it_with_the_keyboard_and_a_reload_shows_it_rated(browser, live_server_url):
    context = browser.new_context()
    page, problems = open_chat(context, live_server_url)
    assert page.locator("#resolve-bar").is_hidden()  # nothing to end before the bot has answered

    page.fill("#composer-input", "where is my order?")
    page.press("#composer-input", "Enter")
    wait_for_answer(page)

    # "This solved my problem", then a confirmation: the conversation is resolved by the customer.
    page.wait_for_selector("#resolve-button:visible")
    assert page.inner_text("#resolve-button") == "This solved my problem"
    page.click("#resolve-button")
    page.wait_for_selector("#resolve-confirm:visible")
    page.click("#resolve-yes")
    page.wait_for_selector("#rating-form:visible")
    assert page.locator("#conversation-end").is_visible()
    assert page.locator("#resolve-bar").is_hidden()
    assert page.locator("#composer-input").is_disabled()
    assert "How did we do?" in page.inner_text("#rating-form")

    # With the keyboard only: the faces have the focus; Space chooses the first, the arrows move
    # to the fourth, Tab goes on to the comment and then to the button.
    assert page.evaluate("document.activeElement.id") == "rating-score-1"
    page.keyboard.press("Space")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert page.is_checked("#rating-score-4")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "rating-comment"
    comment = "<b>Quick</b> & clear, thanks!"
    page.keyboard.type(comment)
    assert page.inner_text("#rating-counter") == f"{len(comment)} / 1000"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "rating-submit"
    page.keyboard.press("Enter")

    thanks = page.locator("#rating-thanks")
    thanks.wait_for()
    assert "Thanks for your feedback" in thanks.inner_text()
    assert "4 out of 5 (Good)" in thanks.inner_text()
    assert comment in thanks.inner_text()  # as text, never as markup
    assert page.locator("#rating-thanks b").count() == 0
    assert page.locator("#rating-form").is_hidden()

    conversation = Conversation.objects.get()
    assert conversation.status == Conversation.Status.RESOLVED
    assert conversation.resolved_by == Conversation.ResolvedBy.CUSTOMER
    rating = Rating.objects.get()
    assert (rating.conversation_id, rating.score, rating.comment) == (conversation.pk, 4, comment)
    assert rating.credited_to == Rating.CreditedTo.BOT and rating.agent is None

    # A reload shows the conversation rated, and never asks again.
    page.reload()
    page.wait_for_selector("#connection-status:has-text('Connected')")
    page.wait_for_selector("#rating-thanks:visible")
    assert "4 out of 5" in page.inner_text("#rating-thanks")
    assert page.locator("#rating-form").is_hidden()
    assert page.locator("#conversation-end").is_visible()
    assert Rating.objects.count() == 1
    assert problems == []
    context.close()


def test_an_agent_resolves_and_the_open_page_asks_for_the_rating_live(browser, live_server_url):
    """An agent takes the conversation over and resolves it: the customer's open page asks for
    the rating at once; the rating is credited to the agent. A second tab of the same customer,
    which still shows the form, is told in words that it has been rated already."""
    agent = get_user_model().objects.create_user(username="kim", password="pw", first_name="Kim", is_staff=True)
    agent.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    context = browser.new_context()
    page, problems = open_chat(context, live_server_url)

    page.click("#handoff-button")
    page.wait_for_selector("#handoff-banner:visible")
    page.wait_for_selector("#resolve-button:visible")
    assert page.inner_text("#resolve-button") == "End chat"
    conversation = Conversation.objects.get()
    in_thread(desk.conversation_claim, conversation=conversation, agent=agent)
    page.wait_for_selector("#handoff-banner:has-text('Kim from our support team is here')")
    assert page.locator("#rating-form").is_hidden()

    in_thread(desk.conversation_resolve, conversation=Conversation.objects.get(), agent=agent)
    page.wait_for_selector("#rating-form:visible")
    assert page.locator("#resolve-bar").is_hidden()
    other, other_problems = open_chat(context, live_server_url)  # the same customer, another tab
    other.wait_for_selector("#rating-form:visible")

    page.click("label[for='rating-score-2']")  # by pointer this time
    page.click("#rating-submit")
    page.wait_for_selector("#rating-thanks:has-text('2 out of 5')")
    rating = Rating.objects.get()
    assert (rating.score, rating.comment) == (2, "")
    assert rating.credited_to == Rating.CreditedTo.AGENT and rating.agent_id == agent.pk

    other.click("label[for='rating-score-5']")
    other.click("#rating-submit")
    other.wait_for_selector("#rating-thanks:has-text('rated already')")
    assert other.locator("#rating-form").is_hidden()
    assert Rating.objects.get().score == 2  # nothing more was stored
    assert problems == []
    assert other_problems == []
    context.close()
