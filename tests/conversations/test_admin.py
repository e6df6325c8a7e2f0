"""The admin's conversation pages: read-only, filtered and searched as staff need, figures
rounded, the reasoning collapsed and escaped."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from chatbot.conversations.models import Conversation, Message, Rating

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/admin/conversations/conversation/"


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


@pytest.fixture
def conversations():
    kim = User.objects.create_user("kim", is_staff=True)
    rated = Conversation.objects.create(
        visitor_id="v1", status="resolved", escalated_at="2026-11-01T10:00Z", resolved_by_agent=kim
    )
    Message.objects.create(conversation=rated, author="customer", text="My parcel never arrived")
    Message.objects.create(
        conversation=rated,
        author="bot",
        text="Sorry to hear that.",
        reasoning="<script>alert(1)</script> The parcel is late.",
        model_variant="fp16",
        time_to_first_token_ms=123.456,
    )
    Rating.objects.create(conversation=rated, score=2)
    plain = Conversation.objects.create(visitor_id="v2")
    Message.objects.create(conversation=plain, author="customer", text="Do you ship to Canada?")
    Message.objects.create(conversation=plain, author="bot", text="Yes.", model_variant="gptq-int4")
    return rated, plain, kim


def listed(client, query: str) -> set[str]:
    page = client.get(f"{URL}?{query}").content.decode()
    return {c.public_id for c in Conversation.objects.all() if c.public_id in page}


def test_filters_and_search(admin_client, conversations):
    rated, plain, kim = conversations
    assert listed(admin_client, "rated=yes") == {rated.public_id}
    assert listed(admin_client, "rated=no") == {plain.public_id}
    assert listed(admin_client, "score=2") == {rated.public_id}
    assert listed(admin_client, "variant=gptq-int4") == {plain.public_id}
    assert listed(admin_client, "handed_off=yes") == {rated.public_id}
    assert listed(admin_client, f"agent={kim.pk}") == {rated.public_id}
    assert listed(admin_client, "status=bot") == {plain.public_id}
    assert listed(admin_client, "q=Canada") == {plain.public_id}


def test_a_conversation_reads_rounded_with_its_reasoning_collapsed_and_nothing_editable(admin_client, conversations):
    rated, _, _ = conversations
    page = admin_client.get(f"{URL}{rated.pk}/change/").content.decode()
    assert "123 ms" in page and "123.456" not in page
    assert "<details><summary>Reasoning</summary>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'name="status"' not in page and 'name="assigned_agent"' not in page
    admin_client.post(f"{URL}{rated.pk}/change/", {"status": "bot"})
    assert Conversation.objects.get(pk=rated.pk).status == "resolved"
    assert admin_client.get(f"{URL}add/").status_code == 403


def test_a_bot_answer_s_passages_read_numbered_with_the_cited_one_marked_not_as_json(admin_client):
    conversation = Conversation.objects.create(visitor_id="v3")
    message = Message.objects.create(
        conversation=conversation,
        author="bot",
        text="Within 30 days. [1]",
        passages=[
            {
                "n": 1,
                "heading": "Return window",
                "title": "Returns & refunds",
                "text": "Return <b>any</b> item within 30 days.",
                "relevance": 0.8123,
                "url": "/help/returns#return-window",
                "cited": True,
            },
            {
                "n": 2,
                "heading": "Costs",
                "title": "Shipping",
                "text": "Free over $50.",
                "relevance": 0.2,
                "url": "javascript:alert(1)",
                "cited": False,
            },
        ],
    )
    for url in (f"{URL}{conversation.pk}/change/", f"/admin/conversations/message/{message.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert "Passages (2) · cited [1]" in page
        assert "<b>[1]</b> Return window — <i>Returns &amp; refunds</i>" in page
        assert "relevance 0.81" in page and "cited</strong>" in page
        assert "Return &lt;b&gt;any&lt;/b&gt; item within 30 days." in page  # text, never markup
        assert "href='/help/returns#return-window'" in page
        assert "javascript:" not in page  # not a link
        assert '"relevance": 0.8123' not in page  # not the raw JSON


@pytest.mark.parametrize(
    "query",
    ["score=abc", "score=9", "score=99999999999999", "score=%C2%B2", "agent=abc", "agent=99999", "agent=1;drop"],
)
def test_a_filter_value_that_is_not_one_of_its_choices_is_refused_or_matches_nothing_never_an_error_page(
    admin_client, conversations, query
):
    response = admin_client.get(f"{URL}?{query}")
    if response.status_code == 302:  # the admin's own answer to a wrong filter: the list, "?e=1"
        assert response["Location"] == f"{URL}?e=1"
    else:
        assert response.status_code == 200
        assert listed(admin_client, query) == set()
