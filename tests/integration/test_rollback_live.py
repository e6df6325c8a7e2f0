"""The rollback toggle with a real worker: a staff user switches serving to FP16 in the admin and
the next answer comes from the FP16 model, with no restart; the comparison runs as a job."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from chatbot.serving.models import VariantChange, VariantComparison
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
URL = "/admin/serving/servingstate/"


def staff_client() -> Client:
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_model_variant"))
    client = Client()
    client.force_login(user)
    return client


async def ask(text: str, client_id: str) -> dict:
    communicator, _ = await new_customer()
    await send_message(communicator, text, client_id=client_id)
    events = await collect_until(communicator, {"answer.done", "generation.failed"})
    await communicator.disconnect()
    return events[-1]


def test_toggle_moves_the_next_generation_to_fp16_and_back(live_worker):
    client = staff_client()
    page = client.get(URL).content.decode()
    assert "test-worker: ready" in page

    before = async_to_sync(ask)("How do I reset my password?", "a1")
    assert before["type"] == "answer.done"

    response = client.post(
        URL,
        {
            "action": "switch",
            "to_variant": "fp16",
            "reason": "refund answers wrong on 4-bit",
            "confirm": "yes",
            "expected_from": "gptq-int4",
        },
        follow=True,
    )
    assert any("now run on fp16" in str(m) for m in response.context["messages"])
    after = async_to_sync(ask)("How do I reset my password?", "a2")
    assert after["type"] == "answer.done"

    from chatbot.conversations.models import Message

    variants = dict(
        Message.objects.filter(pk__in=[before["message"]["id"], after["message"]["id"]]).values_list(
            "pk", "model_variant"
        )
    )
    assert variants == {before["message"]["id"]: "gptq-int4", after["message"]["id"]: "fp16"}
    change = VariantChange.objects.get()
    assert (change.changed_by.username, change.from_variant, change.to_variant) == ("ops", "gptq-int4", "fp16")

    client.post(URL, {"action": "switch", "to_variant": "gptq-int4", "reason": "fixed", "confirm": "yes"})
    back = async_to_sync(ask)("What are your opening hours?", "a3")
    assert Message.objects.get(pk=back["message"]["id"]).model_variant == "gptq-int4"
    assert VariantChange.objects.count() == 2


def test_comparison_runs_on_the_worker_and_its_result_is_shown(live_worker):
    client = staff_client()
    async_to_sync(ask)("Can I pay with PayPal?", "c1")  # a recent customer question
    client.post(URL, {"action": "compare"})
    comparison = VariantComparison.objects.get()
    deadline = time.monotonic() + 240
    while comparison.status in (VariantComparison.Status.PENDING, VariantComparison.Status.RUNNING):
        assert time.monotonic() < deadline, "the comparison did not finish"
        time.sleep(0.5)
        comparison.refresh_from_db()
    assert comparison.status == VariantComparison.Status.DONE, comparison.error
    result = comparison.result
    assert set(result["variants"]) == {"fp16", "gptq-int4"}
    assert result["comparison"]["heldout"]["prompts"] == result["examples"] == settings.COMPARE_HELDOUT_LIMIT > 0
    assert result["comparison"]["extra"]["prompts"] >= 1
    page = client.get(URL).content.decode()
    assert "Latest comparison of the variants" in page
    assert "Recent customer questions" in page
    assert "No comparison has been run yet." not in page
