"""End to end in a real browser (Debian's chromium through playwright): the chat page, the web
server, Redis, the worker and the model."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOT_DONE = "#messages .message--bot:not(.message--streaming) .message__text"


def test_customer_asks_sees_the_answer_stream_in_and_finds_the_history_after_reload(browser, live_server_url):
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live_server_url + "/")
    page.wait_for_selector("#connection-status:has-text('Connected')")

    question = "<img src=x onerror=alert(1)> where is my order?"
    page.fill("#composer-input", question)
    page.press("#composer-input", "Enter")  # Enter sends
    customer = page.locator("#messages .message--customer .message__text").first
    customer.wait_for()
    assert customer.inner_text() == question  # shown as text, never as HTML
    assert page.locator("#messages img").count() == 0

    page.wait_for_selector(BOT_DONE, timeout=120_000)
    answer = page.locator(BOT_DONE).first.inner_text()
    assert answer.strip()
    assert "<think>" not in answer and "</think>" not in answer

    page.reload()
    page.wait_for_selector("#connection-status:has-text('Connected')")
    page.wait_for_selector(BOT_DONE)
    history = page.locator("#messages .message .message__text").all_inner_texts()
    assert history == [question, answer]
    assert dialogs == []
    page.close()


def test_an_error_is_shown_in_words_when_a_message_is_too_long(browser, live_server_url):
    page = browser.new_page()
    page.goto(live_server_url + "/")
    page.wait_for_selector("#connection-status:has-text('Connected')")
    page.fill("#composer-input", "x" * 2001)
    assert page.locator("#send-button").is_disabled()
    assert "2000" in page.locator("#composer-warning").inner_text()
    page.close()
