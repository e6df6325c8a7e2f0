"""End to end in a real browser: the agents' desk and the customer's chat side by side, each in a
browser context of its own (its own cookies), on the web server, Redis, the worker and the model.
A customer asks for a person, an agent takes the conversation over at the desk, talks to them,
hands back to the bot and resolves."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session

from chatbot.conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "desk-test-password"
BOT_DONE = "#messages .message--bot:not(.message--streaming) .message__text"
ERROR_NOTICE = "#messages .notice--error"
# How long the customer's page is watched for an answer that must not come.
NO_ANSWER_WINDOW_MS = 4000


def make_agent(username: str, first_name: str):
    user = get_user_model().objects.create_user(
        username=username, password=PASSWORD, first_name=first_name, is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    return user


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


def open_desk(context, live_server_url, username: str, *, wrong_password_first: bool = False):
    """Logs `username` in through /desk/login/ (the desk sends them there) and waits until the
    desk is connected and has drawn its lists."""
    page = context.new_page()
    problems = record_problems(page)
    page.goto(live_server_url + "/desk/")
    page.wait_for_url(re.compile(r"/desk/login/\?next="))
    if wrong_password_first:
        page.fill("#id_username", username)
        page.fill("#id_password", "not-the-password")
        page.click("button[type=submit]")
        page.wait_for_selector(".login__error")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/desk/$"))
    page.wait_for_selector("#connection-status:has-text('Connected')")
    return page, problems


def entry(list_name: str, conversation_id: str) -> str:
    return f"#list-{list_name} .entry[data-conversation-id='{conversation_id}']"


def send_as_customer(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    page.wait_for_selector(f"#messages .message--customer[data-message-id]:has-text({text!r})")


def wait_for_answers(page, count: int) -> None:
    """Until the customer's page shows `count` finished bot answers (no error instead)."""
    page.wait_for_function(
        "([done, error, count]) => document.querySelectorAll(done).length >= count"
        " || document.querySelector(error) !== null",
        arg=[BOT_DONE, ERROR_NOTICE, count],
        timeout=120_000,
    )
    assert not page.locator(ERROR_NOTICE).all_inner_texts()


def test_a_customer_is_handed_to_an_agent_who_replies_hands_back_and_resolves(browser, live_server_url):
    make_agent("kim", "Kim")
    agent_context, customer_context = browser.new_context(), browser.new_context()
    desk, desk_problems = open_desk(agent_context, live_server_url, "kim", wrong_password_first=True)
    chat, chat_problems = open_chat(customer_context, live_server_url)

    # The bot answers first.
    question = "<b>where</b> is my order?"
    send_as_customer(chat, question)
    wait_for_answers(chat, 1)
    conversation = Conversation.objects.get()
    cid = conversation.public_id

    # The customer asks for a person and waits, first in line; the desk sees it live.
    chat.click("#handoff-button")
    chat.wait_for_selector("#handoff-banner:has-text('number 1 in line')")
    assert chat.locator("#handoff-button").is_hidden()
    desk.wait_for_selector(entry("waiting", cid))
    assert desk.locator(f"{entry('waiting', cid)} .entry__age").inner_text().startswith("waiting")
    assert "The customer asked for a person" in desk.locator(entry("waiting", cid)).inner_text()
    assert desk.locator("#count-waiting").inner_text() == "1"
    assert desk.title().startswith("(1) Desk")

    # The agent reads it: the transcript, the bot's answer with its measures and reasoning.
    desk.click(entry("waiting", cid))
    desk.wait_for_selector("#transcript .item--bot")
    assert desk.locator("#transcript .item--customer .item__text").first.inner_text() == question
    assert desk.locator("#transcript b").count() == 0  # text, never markup
    bot_meta = desk.locator("#transcript .item--bot .item__meta").first.inner_text()
    assert re.search(r"TTFT \d+ ms", bot_meta), bot_meta
    assert desk.locator("#transcript .item--bot details.reasoning").count() == 1
    assert not desk.locator("#transcript .item--bot details.reasoning").first.evaluate("el => el.open")

    # Takes it over: the customer is told who joined.
    desk.click("#claim-button")
    chat.wait_for_selector("#messages .message--system:has-text('Kim from our support team joined')")
    chat.wait_for_selector("#handoff-banner:has-text('Kim from our support team is here')")
    desk.wait_for_selector(entry("mine", cid))
    assert desk.locator(entry("waiting", cid)).count() == 0
    assert desk.title().startswith("Desk")

    # Types (the customer sees it) and replies (live).
    desk.click("#reply-input")
    desk.locator("#reply-input").press_sequentially("Hello, I'm Kim. ", delay=30)
    chat.wait_for_selector("#typing-indicator:has-text('Kim is typing')")
    desk.locator("#reply-input").press_sequentially("Let me check your order.", delay=5)
    desk.press("#reply-input", "Enter")
    reply = "Hello, I'm Kim. Let me check your order."
    chat.wait_for_selector(f"#messages .message--agent .message__text:text-is({reply!r})")
    chat.wait_for_selector("#typing-indicator", state="hidden")
    desk.wait_for_selector(f"#transcript .item--agent[data-message-id]:has-text({reply!r})")

    # The customer's next message reaches the desk live, and the bot says nothing to it.
    answers = chat.locator("#messages .message--bot").count()
    send_as_customer(chat, "It is order 1234, thanks")
    desk.wait_for_selector("#transcript .item--customer:has-text('It is order 1234, thanks')")
    chat.wait_for_timeout(NO_ANSWER_WINDOW_MS)
    assert chat.locator("#messages .message--bot").count() == answers

    # A private note stays at the desk.
    note = "Private: refund approved by the team lead"
    desk.click("#mode-note")
    desk.fill("#reply-input", note)
    desk.press("#reply-input", "Enter")
    desk.wait_for_selector(f"#transcript .item--note:has-text({note!r})")
    desk.click("#mode-reply")

    # A suggested reply streams into the draft; the agent edits it and sends it.
    desk.click("#suggest-button")
    desk.wait_for_function(
        "() => !document.getElementById('suggestion-text').readOnly"
        " && document.getElementById('suggestion-status').textContent !== ''",
        timeout=120_000,
    )
    suggested = desk.input_value("#suggestion-text")
    assert suggested.strip(), desk.inner_text("#suggestion-status")
    edited = f"{suggested.strip()} (Kim checked this.)"
    desk.fill("#suggestion-text", edited)
    desk.click("#suggestion-send")
    desk.wait_for_selector("#suggestion", state="hidden")
    chat.wait_for_function(
        "(text) => [...document.querySelectorAll('#messages .message--agent .message__text')]"
        ".some((el) => el.textContent === text)",
        arg=edited,
    )

    # Hands back: the bot answers the customer's next message again.
    desk.click("#handback-button")
    chat.wait_for_selector('#messages .message--system:has-text("You\'re chatting with our assistant again")')
    chat.wait_for_selector("#handoff-banner", state="hidden")
    chat.wait_for_selector("#handoff-button:visible")
    desk.wait_for_selector(entry("bot", cid))
    finished = chat.locator(BOT_DONE).count()
    send_as_customer(chat, "where is my order now?")
    wait_for_answers(chat, finished + 1)
    # The desk follows the bot's answer with its reasoning.
    desk.wait_for_function(
        "(count) => document.querySelectorAll('#transcript .item--bot[data-message-id]:not(.item--streaming)').length"
        " >= count",
        arg=finished + 1,
    )

    # Takes it over again from the bot's list, and resolves it (with a confirmation).
    desk.click(entry("bot", cid))
    desk.wait_for_selector("#claim-button:visible")
    desk.click("#claim-button")
    desk.wait_for_selector(entry("mine", cid))
    desk.click("#resolve-button")
    desk.wait_for_selector("#resolve-confirm:visible")
    desk.click("#resolve-yes")
    desk.wait_for_selector(entry("resolved", cid), state="attached")
    chat.wait_for_selector("#conversation-end:visible")
    assert chat.locator("#composer-input").is_disabled()
    assert chat.locator("#send-button").is_disabled()
    assert chat.locator("#handoff-button").is_hidden()

    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.RESOLVED
    assert Message.objects.filter(conversation=conversation, author=Message.Author.AGENT).count() == 2
    assert note not in chat.content()
    assert desk_problems == []
    assert chat_problems == []
    agent_context.close()
    customer_context.close()


def test_two_agents_take_over_at_once_and_exactly_one_wins(browser, live_server_url):
    make_agent("kim", "Kim")
    make_agent("lee", "Lee")
    contexts = [browser.new_context() for _ in range(3)]
    kim, kim_problems = open_desk(contexts[0], live_server_url, "kim")
    lee, lee_problems = open_desk(contexts[1], live_server_url, "lee")
    chat, chat_problems = open_chat(contexts[2], live_server_url)

    # "Talk to a person" before writing anything starts the conversation in the queue.
    chat.click("#handoff-button")
    chat.wait_for_selector("#handoff-banner:has-text('number 1 in line')")
    cid = Conversation.objects.get().public_id
    for desk in (kim, lee):
        desk.click(entry("waiting", cid))
        desk.wait_for_selector("#claim-button:visible:enabled")

    # Both click at the same moment (one clock: the pages share the browser).
    at = kim.evaluate("() => Date.now() + 600")
    for desk in (kim, lee):
        desk.evaluate("(at) => setTimeout(() => document.getElementById('claim-button').click(), at - Date.now())", at)

    joined = chat.locator("#messages .message--system", has_text="from our support team joined")
    joined.wait_for()
    winner_name = joined.inner_text().split(" ", 1)[0]
    assert winner_name in {"Kim", "Lee"}
    winner, loser = (kim, lee) if winner_name == "Kim" else (lee, kim)
    winner.wait_for_selector(entry("mine", cid))
    loser.wait_for_selector(f".notice--error:has-text('{winner_name} took this conversation over already.')")
    assert loser.locator(entry("mine", cid)).count() == 0
    assert loser.locator("#claim-button").is_hidden()
    assert Conversation.objects.get().assigned_agent.first_name == winner_name
    assert Message.objects.filter(author=Message.Author.SYSTEM, text__contains="joined").count() == 1
    assert kim_problems == lee_problems == chat_problems == []
    for context in contexts:
        context.close()


def test_a_waiting_customer_is_told_when_no_one_is_online_and_when_someone_is(browser, live_server_url):
    """The customer's banner follows the team's presence live: no agent online (with the support
    hours), an agent opening the desk, the agent going away."""
    make_agent("kim", "Kim")
    chat_context, desk_context = browser.new_context(), browser.new_context()
    chat, chat_problems = open_chat(chat_context, live_server_url)
    chat.click("#handoff-button")
    nobody = f"No one from our team is online right now. We're available {settings.SUPPORT_HOURS}."
    chat.wait_for_selector(f"#handoff-banner:has-text({nobody!r})")
    assert "Your conversation stays in the queue." in chat.inner_text("#handoff-banner")

    desk, desk_problems = open_desk(desk_context, live_server_url, "kim")
    chat.wait_for_selector("#handoff-banner:has-text('number 1 in line')")
    desk.wait_for_selector(entry("waiting", Conversation.objects.get().public_id))

    desk.select_option("#presence-select", "away")
    chat.wait_for_selector(f"#handoff-banner:has-text({nobody!r})")
    desk.wait_for_selector("#team-list .agent[data-presence='away']:has-text('Kim')")
    assert chat_problems == []
    assert desk_problems == []
    chat_context.close()
    desk_context.close()


# Keeps every WebSocket the page opens in `window.sockets`, so a test can drop one.
RECORD_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.sockets.push(this); }
  };
})()"""


def test_the_desk_reconnects_reopens_the_conversation_and_sends_what_waited(browser, live_server_url):
    """The desk's socket drops: a reply written meanwhile waits and goes once, the conversation
    is read again (with what the customer wrote meanwhile); a socket whose session is gone sends
    the agent to the login page."""
    make_agent("kim", "Kim")
    chat_context, desk_context = browser.new_context(), browser.new_context()
    desk_context.add_init_script(RECORD_SOCKETS)
    chat, chat_problems = open_chat(chat_context, live_server_url)
    chat.click("#handoff-button")
    chat.wait_for_selector("#handoff-banner:visible")
    desk, desk_problems = open_desk(desk_context, live_server_url, "kim")
    cid = Conversation.objects.get().public_id
    desk.click(entry("waiting", cid))
    desk.wait_for_selector("#claim-button:visible:enabled")
    desk.click("#claim-button")
    desk.wait_for_selector(entry("mine", cid))

    desk.evaluate("() => window.sockets.at(-1).close()")
    desk.wait_for_selector("#connection-status[data-state='reconnecting']")
    desk.fill("#reply-input", "Written while the desk was offline")
    desk.press("#reply-input", "Enter")
    send_as_customer(chat, "Are you still there?")
    desk.wait_for_selector("#connection-status[data-state='connected']")
    desk.wait_for_selector("#transcript .item--customer:has-text('Are you still there?')")
    chat.wait_for_selector("#messages .message--agent:has-text('Written while the desk was offline')")
    desk.wait_for_selector("#transcript .item--agent[data-message-id]:has-text('Written while the desk was offline')")
    assert desk.locator("#transcript .item--agent").count() == 1
    assert Message.objects.filter(author=Message.Author.AGENT).count() == 1

    Session.objects.all().delete()  # logged out elsewhere
    desk.evaluate("() => window.sockets.at(-1).close()")
    desk.wait_for_url(re.compile(r"/desk/login/\?next="))
    assert desk_problems == []
    assert chat_problems == []
    chat_context.close()
    desk_context.close()
