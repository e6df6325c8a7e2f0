"""The frames the server sends are built in one module, and that module and docs/protocol.md
describe the same events."""

from __future__ import annotations

import re

from django.utils import timezone

from chatbot.conversations import protocol
from chatbot.conversations.models import Conversation, Generation, Message, Note, Rating
from tests.conftest import ROOT


def documented_server_events() -> set[str]:
    """Event types in the first column of every table under a "... server → ..." heading (the
    customer's socket and the desk's)."""
    types: set[str] = set()
    in_server_section = False
    for line in (ROOT / "docs" / "protocol.md").read_text().splitlines():
        if line.startswith("## "):
            in_server_section = "server →" in line.lower()
        elif in_server_section and (match := re.match(r"^\| `([a-z.]+)` \|", line)):
            types.add(match.group(1))
    return types


def sample_frames() -> dict[str, dict]:
    now = timezone.now()
    conversation = Conversation(public_id="c1", visitor_id="visitor-1", status=Conversation.Status.BOT, created_at=now)
    message = Message(id=7, author=Message.Author.BOT, text="Hi", reasoning="secret", created_at=now, generation_id=3)
    message.conversation = conversation
    generation = Generation(id=3, status=Generation.Status.RUNNING)
    note = Note(id=4, text="VIP customer", created_at=now)
    queue = protocol.queue_payload(position=2, agents_online=1, support_hours="always")
    desk_conversation = protocol.desk_conversation_payload(conversation, last_message="Hi")
    agent = {"id": 1, "name": "Kim", "presence": "online", "capacity": 5, "active": 0}
    ids = {"generation_id": 3, "attempt": 1}
    return {
        "history": protocol.history(conversation=conversation, messages=[message], generation=generation),
        "message.saved": protocol.message_saved(client_id="a", message=message, conversation=conversation),
        "generation.queued": protocol.generation_queued(position=2, **ids),
        "generation.started": protocol.generation_started(model_variant="fp16", **ids),
        "answer.thinking": protocol.answer_thinking(**ids),
        "answer.delta": protocol.answer_delta(text="Hi", **ids),
        "answer.done": protocol.answer_done(message=message, attempt=1),
        "generation.failed": protocol.generation_failed(generation_id=3, detail="Sorry"),
        "generation.cancelled": protocol.generation_cancelled(generation_id=3),
        "message.new": protocol.message_new(message=message),
        "error": protocol.error(code="malformed", detail="Bad"),
        "pong": protocol.pong(),
        "reasoning.delta": protocol.reasoning_delta(text="thinking", **ids),
        "conversation.updated": protocol.conversation_updated(conversation=conversation),
        "rating.saved": protocol.rating_saved(conversation_id="c1", rating=Rating(score=5, comment="", created_at=now)),
        "queue.updated": protocol.queue_updated(conversation_id="c1", queue=queue),
        "typing": protocol.typing(conversation_id="c1", author="agent", name="Kim", active=True),
        "desk.snapshot": protocol.desk_snapshot(
            me=agent, agents=[agent], lists={"waiting": [desk_conversation]}, support_hours="always"
        ),
        "desk.conversation": protocol.desk_conversation(conversation=desk_conversation),
        "desk.agents": protocol.desk_agents(agents=[agent]),
        "conversation.detail": protocol.conversation_detail(
            conversation=desk_conversation, messages=[message], notes=[note], generation=generation
        ),
        "staff.message.new": protocol.staff_message_new(message=message),
        "note.new": protocol.note_new(conversation_id="c1", note=note),
        "suggestion.queued": protocol.suggestion_queued(conversation_id="c1", generation_id=3),
        "suggestion.delta": protocol.suggestion_delta(generation_id=3, text="Draft"),
        "suggestion.done": protocol.suggestion_done(generation_id=3, text="Draft"),
        "suggestion.failed": protocol.suggestion_failed(generation_id=3, detail="Sorry"),
    }


def test_every_documented_server_event_has_a_builder_and_every_builder_is_documented():
    documented = documented_server_events()
    assert "answer.delta" in documented and "reasoning.delta" in documented  # the parser reads the tables
    assert documented == set(protocol.SERVER_EVENTS)


def test_each_builder_makes_a_frame_of_its_own_type():
    frames = sample_frames()
    assert set(frames) == set(protocol.SERVER_EVENTS)
    for event_type, frame in frames.items():
        assert frame["type"] == event_type


def test_no_frame_for_customers_carries_a_bot_message_s_reasoning():
    for event_type, frame in sample_frames().items():
        if event_type in protocol.STAFF_ONLY_EVENTS:
            continue
        assert "secret" not in repr(frame), event_type
        assert "reasoning" not in repr(frame), event_type


def test_an_error_names_the_refused_frame_and_only_a_well_formed_client_id():
    frame = protocol.error(code="rate_limited", detail="Slow down", frame={"type": "message.send", "client_id": "ok-1"})
    assert (frame["frame_type"], frame["client_id"]) == ("message.send", "ok-1")
    frame = protocol.error(code="malformed", detail="Bad", frame={"type": "x" * 100, "client_id": "<script>"})
    assert frame["frame_type"] == "x" * 40 and "client_id" not in frame


PASSAGES = [
    {
        "n": 1,
        "article_id": 5,
        "revision": 2,
        "slug": "returns",
        "title": "Returns and refunds",
        "anchor": "return-window",
        "heading": "Return window",
        "text": "You can return any item within 30 days of delivery.",
        "relevance": 0.81,
        "url": "/help/returns#return-window",
        "cited": True,
    },
    {
        "n": 2,
        "article_id": 6,
        "revision": 1,
        "slug": "shipping",
        "title": "Shipping",
        "anchor": "costs",
        "heading": "Costs",
        "text": "Standard shipping is free over $50.",
        "relevance": 0.2,
        "url": "/help/shipping#costs",
        "cited": False,
    },
]


def test_customers_get_a_bot_answer_s_cited_sources_as_links_never_its_passages():
    message = Message(
        id=8,
        author=Message.Author.BOT,
        text="Within 30 days. [1]",
        created_at=timezone.now(),
        passages=PASSAGES,
    )
    payload = protocol.message_payload(message)
    assert "passages" not in payload
    assert payload["sources"] == [
        {"n": 1, "title": "Returns and refunds", "heading": "Return window", "url": "/help/returns#return-window"}
    ]
    # Neither the passages' text nor an uncited one reaches a customer's frame.
    for frame in (
        protocol.answer_done(message=message),
        protocol.message_new(message=message),
        protocol.history(conversation=None, messages=[message], generation=None),
    ):
        assert "30 days of delivery" not in repr(frame) and "Shipping" not in repr(frame)


def test_staff_get_every_passage_an_answer_was_given_with_its_text_and_whether_it_is_cited():
    message = Message(id=8, author=Message.Author.BOT, text="Within 30 days. [1]", created_at=timezone.now())
    message.passages = PASSAGES
    payload = protocol.staff_message_payload(message)
    assert payload["passages"] == PASSAGES
    assert [p["n"] for p in payload["sources"]] == [1]
    assert (
        protocol.staff_message_payload(Message(author="customer", text="hi", created_at=timezone.now()))["passages"]
        == []
    )


def test_no_message_frame_for_customers_carries_passages():
    for event_type, frame in sample_frames().items():
        if event_type not in protocol.STAFF_ONLY_EVENTS:
            assert "passages" not in repr(frame), event_type
