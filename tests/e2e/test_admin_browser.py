"""End to end in a real browser: the admin under the Content-Security-Policy. A superuser signs in
through the admin's (throttled) login form, opens the model serving page and a conversation with
the bot's reasoning; no page logs a console error (a CSP violation is one)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from chatbot.conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "admin-browser-test-password"


def test_the_admin_signs_in_and_its_pages_keep_to_the_content_security_policy(browser, live_server_url):
    get_user_model().objects.create_superuser(username="root", email="", password=PASSWORD)
    conversation = Conversation.objects.create(visitor_id="v-admin-browser")
    Message.objects.create(conversation=conversation, author=Message.Author.BOT, text="Hi", reasoning="because")
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

    page.goto(live_server_url + "/admin/")
    page.wait_for_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))

    page.goto(live_server_url + "/admin/serving/servingstate/")
    page.wait_for_selector("#active-variant")
    # The page's styles come from static/chatbot-admin/admin.css, not an inline <style>.
    assert page.eval_on_selector("#active-variant", "el => getComputedStyle(el).fontWeight") == "700"

    page.goto(f"{live_server_url}/admin/conversations/conversation/{conversation.pk}/change/")
    page.click("details summary")
    assert page.eval_on_selector(".reasoning", "el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    assert problems == []
    context.close()
