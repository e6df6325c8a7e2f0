"""End to end in a real browser (Debian's chromium through playwright): the chat page, the web
server, Redis, the worker and the model."""

from __future__ import annotations

import os
import signal
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from chatbot.conversations.models import Generation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOT_DONE = "#messages .message--bot:not(.message--streaming) .message__text"
ERROR_NOTICE = "#messages .notice--error"


def open_chat(page, live_server_url) -> list[str]:
    """Opens the chat in `page` and waits until it is connected. Returns the list that collects
    the console errors and uncaught exceptions the page logs from then on (a module that fails to
    load shows there)."""
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.goto(live_server_url + "/")
    try:
        page.wait_for_selector("#connection-status:has-text('Connected')")
    except Exception as exc:
        raise AssertionError(f"the page did not connect; its console: {problems}") from exc
    return problems


def wait_for_answer(page, timeout_ms: int = 120_000) -> str:
    """The finished answer's text. Fails at once, quoting the page, if the page shows an error
    instead; on a timeout the failure says what the page showed (and the report carries the
    worker's and the web server's logs, tests/conftest.py)."""
    try:
        page.wait_for_selector(f"{BOT_DONE}, {ERROR_NOTICE}", timeout=timeout_ms)
    except Exception as exc:
        raise AssertionError(
            f"no answer in {timeout_ms / 1000:.0f} s; the page showed: {page.inner_text('#messages')!r}"
        ) from exc
    errors = page.locator(ERROR_NOTICE).all_inner_texts()
    assert not errors, f"the page showed an error instead of an answer: {errors}"
    return page.locator(BOT_DONE).first.inner_text()


def test_customer_asks_sees_the_answer_stream_in_and_finds_the_history_after_reload(browser, live_server_url):
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    problems = open_chat(page, live_server_url)

    question = "<img src=x onerror=alert(1)> where is my order?"
    page.fill("#composer-input", question)
    page.press("#composer-input", "Enter")  # Enter sends
    customer = page.locator("#messages .message--customer .message__text").first
    customer.wait_for()
    assert customer.inner_text() == question  # shown as text, never as HTML
    assert page.locator("#messages img").count() == 0

    answer = wait_for_answer(page)
    assert answer.strip()
    assert "<think>" not in answer and "</think>" not in answer

    page.reload()
    page.wait_for_selector("#connection-status:has-text('Connected')")
    page.wait_for_selector(BOT_DONE)
    history = page.locator("#messages .message .message__text").all_inner_texts()
    assert history == [question, answer]
    assert dialogs == []
    assert problems == []
    page.close()


def test_an_error_is_shown_in_words_when_a_message_is_too_long(browser, live_server_url):
    page = browser.new_page()
    problems = open_chat(page, live_server_url)
    page.fill("#composer-input", "x" * 2001)
    assert page.locator("#send-button").is_disabled()
    assert "2000" in page.locator("#composer-warning").inner_text()
    assert problems == []
    page.close()


def test_the_shared_generation_tracker_applies_the_protocols_attempt_and_final_frame_rules(browser, live_server_url):
    """static/js/generations.js (the chat's and the desk's): a higher attempt restarts an answer in
    progress, a lower one is ignored, a final frame always counts and ends the generation, and a
    redraw forgets attempts but not ended generations."""
    frames_and_verdicts = [
        ({"type": "history"}, "apply"),
        ({"type": "generation.queued", "generation_id": 7, "attempt": 1}, "apply"),
        ({"type": "answer.delta", "generation_id": "7", "attempt": 1}, "apply"),
        ({"type": "generation.queued", "generation_id": 7, "attempt": 2}, "restart"),
        ({"type": "answer.delta", "generation_id": 7, "attempt": 1}, "ignore"),
        ({"type": "answer.delta", "generation_id": 7, "attempt": 2}, "apply"),
        ({"type": "answer.done", "generation_id": 7, "attempt": 1}, "apply"),
        ({"type": "answer.delta", "generation_id": 7, "attempt": 3}, "ignore"),
        ({"type": "generation.cancelled", "generation_id": 7}, "apply"),
        ({"type": "answer.delta", "generation_id": 8, "attempt": 2}, "apply"),
        ("reset", None),
        ({"type": "answer.delta", "generation_id": 8, "attempt": 2}, "apply"),
        ({"type": "answer.delta", "generation_id": 7, "attempt": 4}, "ignore"),
    ]
    page = browser.new_page()
    problems = open_chat(page, live_server_url)
    verdicts = page.evaluate(
        """async (frames) => {
          const { GenerationTracker } = await import("/static/js/generations.js");
          const tracker = new GenerationTracker();
          return frames.map((frame) => frame === "reset" ? tracker.resetAttempts() ?? null : tracker.judge(frame));
        }""",
        [frame for frame, _ in frames_and_verdicts],
    )
    assert verdicts == [verdict for _, verdict in frames_and_verdicts]
    assert problems == []
    page.close()


# Each text the streaming answer's bubble shows, in order: [streaming?, text].
RECORD_ANSWER_TEXTS = """() => {
  window.answerTexts = [];
  new MutationObserver(() => {
    const bubble = [...document.querySelectorAll("#messages .message--bot")].at(-1);
    if (!bubble) return;
    const text = bubble.querySelector(".message__text").textContent;
    const last = window.answerTexts.at(-1);
    const streaming = bubble.classList.contains("message--streaming");
    if (!last || last[0] !== streaming || last[1] !== text) window.answerTexts.push([streaming, text]);
  }).observe(document.querySelector("#messages"), { subtree: true, childList: true, characterData: true });
}"""


def signal_each(pids: list[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def test_an_answer_whose_engine_dies_mid_stream_starts_over_in_place(browser, live_server_url, live_worker):
    """The engine process dies while the answer streams in: the page drops the partial text when
    the answer's next attempt starts, and ends with the whole answer, once, and no error."""
    page = browser.new_page()
    problems = open_chat(page, live_server_url)
    streaming_or_ended = (
        "([done, error, before]) => window.answerTexts.some(([streaming, text]) => streaming && text.length > 0)"
        " || document.querySelectorAll(done).length > before || document.querySelector(error) !== null"
    )
    ended = (
        "([done, error, before]) => document.querySelectorAll(done).length > before"
        " || document.querySelector(error) !== null"
    )
    for tries in range(1, 4):
        engines = live_worker.engine_processes()
        if not engines:  # an earlier try's were killed: a message of its own starts new ones
            answers_before = page.locator(BOT_DONE).count()
            page.fill("#composer-input", "hello")
            page.press("#composer-input", "Enter")
            page.wait_for_function(ended, arg=[BOT_DONE, ERROR_NOTICE, answers_before], timeout=120_000)
            engines = live_worker.engine_processes()
        assert engines
        answers_before = page.locator(BOT_DONE).count()
        page.evaluate(RECORD_ANSWER_TEXTS)
        # An answer of the test model streams in well under a second, quicker than a stop sent
        # when the page shows its first words would land: the engines run in short slices
        # instead, stopped in between, until the page shows the answer streaming. Stopped, they
        # cannot finish it.
        signal_each(engines, signal.SIGSTOP)
        try:
            page.fill("#composer-input", f"where is my order number {tries}?")
            page.press("#composer-input", "Enter")
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, (
                    f"no answer streamed; the page showed {page.inner_text('#messages')!r}"
                )
                signal_each(engines, signal.SIGCONT)
                time.sleep(0.02)
                signal_each(engines, signal.SIGSTOP)
                try:  # what the slice made reaches the page (the recorder sees every text it showed)
                    page.wait_for_function(
                        streaming_or_ended, arg=[BOT_DONE, ERROR_NOTICE, answers_before], timeout=300
                    )
                    break
                except PlaywrightTimeoutError:
                    continue
            assert not page.locator(ERROR_NOTICE).all_inner_texts()
        except BaseException:
            signal_each(engines, signal.SIGCONT)  # the engines of a failed test run on, for the tests after it
            raise
        if page.locator(BOT_DONE).count() > answers_before:  # done in the slice that began it
            signal_each(engines, signal.SIGCONT)
            continue
        try:
            partial = page.evaluate("window.answerTexts")[-1][1]
        finally:
            signal_each(engines, signal.SIGKILL)  # the worker starts new ones
        page.wait_for_function(ended, arg=[BOT_DONE, ERROR_NOTICE, answers_before], timeout=120_000)
        # The answer's end can have left the engine in the slice that showed its first words (or
        # the variant's engine was a new one, not stopped): then it was done in one run, and the
        # test asks again.
        if Generation.objects.order_by("-pk").values_list("attempts", flat=True).first() == 2:
            break
    else:
        raise AssertionError("the answer was done before its engine could be stopped, three times")
    errors = page.locator(ERROR_NOTICE).all_inner_texts()
    assert not errors, errors
    answer = page.locator(BOT_DONE).last.inner_text()
    texts = page.evaluate("window.answerTexts")
    streamed = [text for streaming, text in texts if streaming]
    assert partial in streamed and partial.strip()
    after = streamed[streamed.index(partial) + 1 :]
    assert "" in after, "the page dropped the lost attempt's text when the next one started"
    # Everything the next attempt streamed is the start of the stored answer: nothing of the lost
    # attempt's text is left in front of it.
    assert all(answer.startswith(text.strip()) for text in after[after.index("") :]), (texts, answer)
    assert not set(live_worker.engine_processes()) & set(engines)
    assert problems == []
    page.close()
