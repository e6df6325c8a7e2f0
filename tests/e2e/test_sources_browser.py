"""End to end in a real browser: a bot answer's knowledge-base sources. The customer's chat shows
the cited help-center section as a link (from the history, and live from `answer.done`) and
nothing of the passages' text; the desk shows every passage the answer was given, collapsed, with
its text and the cited one marked; the admin shows them formatted. Seeded through the ORM, on the
web server and Redis; no worker, no model."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from chatbot.conversations import protocol
from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.events import send_event_now
from tests.conftest import make_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "sources-test-password"
# Screenshots for a person to look at (not compared): set SOURCES_SHOTS_DIR to keep them.
SHOTS_DIR = os.environ.get("SOURCES_SHOTS_DIR")
PHONE = {"width": 375, "height": 740}

CITED_TEXT = "Unworn items can be sent back within 30 days of delivery, in their original box."
UNCITED_TEXT = "Gift cards are delivered by email and never expire."
PASSAGES = [
    {
        "n": 1,
        "article_id": 1,
        "revision": 3,
        "slug": "returns",
        "title": "Returns & refunds",
        "anchor": "return-window",
        "heading": "Return window",
        "text": CITED_TEXT,
        "relevance": 0.8421,
        "url": "/help/returns#return-window",
        "cited": True,
    },
    {
        "n": 2,
        "article_id": 4,
        "revision": 1,
        "slug": "gift-cards",
        "title": "Gift cards",
        "anchor": "delivery",
        "heading": "Delivery of gift cards",
        "text": UNCITED_TEXT,
        "relevance": 0.1934,
        "url": "/help/gift-cards#delivery",
        "cited": False,
    },
]
ANSWER = "You can return it within 30 days of delivery. [1]"


def record_problems(page) -> list[str]:
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    return problems


def shot(page, name: str, **kwargs) -> None:
    if SHOTS_DIR:
        Path(SHOTS_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS_DIR) / f"{name}.png"), **kwargs)


def in_thread(function, *args):
    """Runs `function` in a thread of its own: Playwright's sync API keeps an event loop in this
    one, where async_to_sync (the channel layer) could not run."""

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def seed_customer(context, live_url: str) -> Conversation:
    """A customer's session in `context` with a conversation: their question, the bot's answer
    citing passage 1 of the two it was given."""
    cookie, visitor_id = make_session()
    name, value = cookie.split("=", 1)
    context.add_cookies([{"name": name, "value": value, "url": live_url}])
    now = timezone.now()
    conversation = Conversation.objects.create(visitor_id=visitor_id, last_message_at=now)
    Message.objects.create(conversation=conversation, author="customer", text="Can I return my shoes?")
    Message.objects.create(
        conversation=conversation, author="bot", text=ANSWER, passages=PASSAGES, model_variant="fp16"
    )
    return conversation


def live_answer(conversation: Conversation) -> Message:
    """A second answer, stored, whose `answer.done` (customer) and `staff.message.new` (staff)
    are sent as the worker sends them."""
    question = Message.objects.create(conversation=conversation, author="customer", text="And the refund?")
    generation = Generation.objects.create(
        conversation=conversation, prompt_message=question, status=Generation.Status.DONE, model_variant="fp16"
    )
    passages = [{**PASSAGES[0], "cited": False}, {**PASSAGES[1], "n": 2, "cited": True}]
    answer = Message.objects.create(
        conversation=conversation,
        author="bot",
        text="A gift card arrives by email. [2]",
        passages=passages,
        generation=generation,
        model_variant="fp16",
    )
    in_thread(
        send_event_now,
        protocol.conversation_group(conversation.public_id),
        protocol.answer_done(message=answer, attempt=1),
    )
    in_thread(
        send_event_now,
        protocol.conversation_staff_group(conversation.public_id),
        protocol.staff_message_new(message=answer),
    )
    return answer


def test_the_customer_sees_the_cited_source_as_a_link_and_staff_see_every_passage(browser, web_server_url):
    customer_context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    conversation = seed_customer(customer_context, web_server_url)
    chat = customer_context.new_page()
    chat_problems = record_problems(chat)
    chat.goto(web_server_url + "/")
    chat.wait_for_selector("#connection-status:has-text('Connected')")

    # The history: the answer's text (its marker as a small link), then its one source.
    bot = chat.locator("#messages .message--bot").first
    bot.locator(".sources").wait_for()
    assert bot.locator(".message__text").inner_text() == ANSWER
    marker = bot.locator(".message__text sup.cite a")
    assert marker.inner_text() == "[1]"
    assert marker.get_attribute("href") == "/help/returns#return-window"
    links = bot.locator(".sources a.source__link")
    assert links.count() == 1
    link = links.first
    assert link.inner_text() == "Return window"
    assert link.get_attribute("href") == "/help/returns#return-window"
    assert (link.get_attribute("target"), link.get_attribute("rel")) == ("_blank", "noopener")
    assert "Returns & refunds" in bot.locator(".sources").inner_text()
    # Nothing of the passages' text, nor the uncited passage, reaches the customer's page.
    html = chat.content()
    for leaked in (CITED_TEXT, UNCITED_TEXT, "Delivery of gift cards", "0.84"):
        assert leaked not in html, leaked
    # Phone-size: nothing sticks out sideways.
    assert chat.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(chat, "chat-phone")

    # The agent opens the conversation from the bot's live list.
    agent = get_user_model().objects.create_user(username="kim", password=PASSWORD, first_name="Kim", is_staff=True)
    agent.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    staff_context = browser.new_context(viewport={"width": 1280, "height": 860})
    desk = staff_context.new_page()
    desk_problems = record_problems(desk)
    desk.goto(web_server_url + "/desk/")
    desk.wait_for_url(re.compile(r"/desk/login/"))
    desk.fill("#id_username", "kim")
    desk.fill("#id_password", PASSWORD)
    desk.click("button[type=submit]")
    desk.wait_for_url(re.compile(r"/desk/$"))
    desk.wait_for_selector("#connection-status:has-text('Connected')")
    desk.click(f"#list-bot .entry[data-conversation-id='{conversation.public_id}']")
    block = desk.locator("#transcript .item--bot details.passages").first
    block.wait_for()
    assert block.locator("summary").inner_text() == "Passages (2) · cited [1]"
    assert not block.evaluate("el => el.open")  # collapsed until asked for
    block.locator("summary").click()
    items = block.locator(".passage")
    assert items.count() == 2
    cited = block.locator(".passage--cited")
    assert cited.count() == 1
    assert cited.locator(".passage__text").inner_text() == CITED_TEXT
    assert cited.locator(".tag--cited").inner_text() == "cited"
    assert "Return window" in cited.inner_text() and "Returns & refunds" in cited.inner_text()
    assert "relevance 0.84" in cited.inner_text()
    assert cited.locator("a.passage__link").get_attribute("href") == "/help/returns#return-window"
    uncited = items.nth(1)
    assert uncited.locator(".passage__text").inner_text() == UNCITED_TEXT
    assert uncited.locator(".tag--cited").count() == 0
    shot(desk, "desk")

    # A new answer arrives live on both pages: the chat draws its source, the desk its passages.
    live_answer(conversation)
    live = chat.locator("#messages .message--bot").nth(1)
    live.locator(".sources a.source__link").wait_for()
    assert live.locator(".sources a.source__link").inner_text() == "Delivery of gift cards"
    assert live.locator(".sources a.source__link").get_attribute("href") == "/help/gift-cards#delivery"
    assert UNCITED_TEXT not in chat.content()
    desk.wait_for_selector("#transcript .item--bot >> nth=1 >> details.passages")
    assert (
        desk.locator("#transcript .item--bot").nth(1).locator(".passages summary").inner_text()
        == "Passages (2) · cited [2]"
    )
    shot(chat, "chat-phone-live")

    # The admin: the conversation's messages with their passages, formatted, not JSON.
    get_user_model().objects.create_superuser(username="root", email="", password=PASSWORD)
    admin_context = browser.new_context(viewport={"width": 1280, "height": 860})
    admin = admin_context.new_page()
    admin_problems = record_problems(admin)
    admin.goto(web_server_url + "/admin/login/")
    admin.fill("#id_username", "root")
    admin.fill("#id_password", PASSWORD)
    admin.click("input[type=submit]")
    admin.wait_for_url(re.compile(r"/admin/$"))
    admin.goto(f"{web_server_url}/admin/conversations/conversation/{conversation.pk}/change/")
    passages = admin.locator("details.passages").first
    assert passages.locator("summary").inner_text() == "Passages (2) · cited [1]"
    passages.locator("summary").click()
    assert CITED_TEXT in passages.inner_text() and UNCITED_TEXT in passages.inner_text()
    assert passages.locator(".passage--cited").count() == 1
    assert passages.locator(".passage--cited a").get_attribute("href") == "/help/returns#return-window"
    assert '"relevance"' not in admin.content()
    shot(admin, "admin", full_page=True)

    assert chat_problems == [] and desk_problems == [] and admin_problems == []
    for context in (customer_context, staff_context, admin_context):
        context.close()


def test_only_help_pages_and_http_urls_become_links_and_only_markers_of_a_source_are_drawn_as_links(
    browser, web_server_url
):
    """static/js/sources.js (the chat's and the desk's): a URL becomes a link only if it is a help
    page of this site or http(s); a marker "[n]" is a link only where a source has that n; the
    text is set as text."""
    urls = {
        "/help/returns#return-window": "/help/returns#return-window",
        "https://help.example.com/returns": "https://help.example.com/returns",
        "HTTP://example.com/": "http://example.com/",
        "javascript:alert(1)": None,
        "//evil.example.com/": None,
        "/admin/": None,
        "data:text/html,<b>x</b>": None,
        " /help/returns": None,
        "": None,
    }
    page = browser.new_page()
    problems = record_problems(page)
    page.goto(web_server_url + "/")
    page.wait_for_selector("#connection-status:has-text('Connected')")
    result = page.evaluate(
        """async (urls) => {
          const { safeUrl, fillCitedText } = await import("/static/js/sources.js");
          const el = document.createElement("div");
          fillCitedText(el, "<b>Yes</b> [1], see [3] and [2].", [
            { n: 1, url: "/help/a#b", heading: "A" },
            { n: 2, url: "javascript:alert(1)", heading: "B" },
          ]);
          return {
            urls: urls.map((url) => safeUrl(url)),
            text: el.textContent,
            links: [...el.querySelectorAll("a")].map((a) => [a.textContent, a.getAttribute("href"), a.rel, a.target]),
            sups: el.querySelectorAll("sup").length,
            bold: el.querySelectorAll("b").length,
          };
        }""",
        list(urls),
    )
    assert result["urls"] == list(urls.values())
    assert result["text"] == "<b>Yes</b> [1], see [3] and [2]."
    assert result["links"] == [["[1]", "/help/a#b", "noopener", "_blank"]]
    assert (result["sups"], result["bold"]) == (2, 0)  # [2] names a source without a safe link: text
    assert problems == []
    page.close()


def test_the_source_link_opens_the_help_page_at_its_section(browser, web_server_url):
    """The demo's articles imported: a bot answer citing the return window; the customer follows
    its link to the help center, which shows the article with the cited section, and searches it."""
    from chatbot.knowledge.services import articles_import
    from chatbot.knowledge.text import passages_from_folder
    from inference_worker.demo_model.corpus import ARTICLES_DIR

    articles_import(folder=ARTICLES_DIR)
    passage = next(p for p in passages_from_folder(ARTICLES_DIR) if p.key == "returns#return-window")
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    cookie, visitor_id = make_session()
    name, value = cookie.split("=", 1)
    context.add_cookies([{"name": name, "value": value, "url": web_server_url}])
    conversation = Conversation.objects.create(visitor_id=visitor_id, last_message_at=timezone.now())
    Message.objects.create(conversation=conversation, author="customer", text="How long can I return things?")
    Message.objects.create(
        conversation=conversation,
        author="bot",
        text=f"{passage.text} [1]",
        passages=[{**passage.snapshot(1), "cited": True}],
        model_variant="fp16",
    )
    chat = context.new_page()
    problems = record_problems(chat)
    chat.goto(web_server_url + "/")
    link = chat.locator("#messages .message--bot .sources a.source__link").first
    link.wait_for()
    assert link.inner_text() == "Return window"
    with context.expect_page() as opened:
        link.click()
    help_page = opened.value
    help_page.wait_for_load_state()
    assert help_page.url == f"{web_server_url}/help/returns#return-window"
    assert help_page.locator("h1").inner_text() == "Returns and refunds"
    section = help_page.locator("#return-window")
    assert section.inner_text() == "Return window"
    assert "within 30 days" in help_page.locator("main").inner_text()
    # The help center's search uses the bot's retrieval.
    help_page.goto(web_server_url + "/help/?q=how+long+does+a+refund+take")
    assert "When the refund arrives" in help_page.locator("main").inner_text()
    shot(help_page, "help-page")
    assert problems == [], problems
