"""The rollback toggle through the admin, as staff use it (Django test client)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Permission, User

from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_key
from chatbot.serving.models import ServingState, VariantChange
from chatbot.serving.selectors import active_variant_get

URL = "/admin/serving/servingstate/"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rollback_admin(client):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_model_variant"))
    client.force_login(user)
    return client


def switch(client, to_variant: str, reason: str = "4-bit answers about refunds are wrong", **extra):
    data = {"action": "switch", "to_variant": to_variant, "reason": reason, "confirm": "yes", **extra}
    response = client.post(URL, data, follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def fake_heartbeat(redis_client, *, fp16: str) -> None:
    """A worker's heartbeat as `WorkerRuntime.beat` writes it; used only where these tests are about
    the toggle's refusal rules, the integration test below uses a real worker."""
    status = WorkerStatus(
        name="hb-test",
        variants={"gptq-int4": {"state": "ready"}, "fp16": {"state": fp16}},
        running=0,
        waiting=0,
        reported_at=time.time(),
    )
    redis_client.set(heartbeat_key(status.name), status.encode(), ex=30)


def test_staff_without_the_permission_gets_no_access(client):
    user = User.objects.create_user("agent", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert (
        client.post(URL, {"action": "switch", "to_variant": "fp16", "reason": "x", "confirm": "yes"}).status_code == 403
    )
    assert "Model serving" not in client.get("/admin/").content.decode()
    assert active_variant_get(fresh=True) == "gptq-int4"


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_page_shows_the_active_variant_readiness_and_history(rollback_admin, redis_client):
    fake_heartbeat(redis_client, fp16="standby")
    try:
        page = rollback_admin.get(URL).content.decode()
    finally:
        heartbeat_delete("hb-test")
    assert 'id="active-variant">gptq-int4<' in page
    assert "hb-test: standby" in page
    assert "No switch yet." in page
    assert "No comparison has been run yet." in page


def test_toggle_is_refused_when_no_worker_can_serve_the_target(rollback_admin):
    messages = switch(rollback_admin, "fp16")
    assert any("Switch refused" in m and "no worker is running" in m for m in messages)
    assert active_variant_get(fresh=True) == "gptq-int4"
    assert VariantChange.objects.count() == 0


def test_toggle_is_refused_when_the_target_failed_to_load(rollback_admin, redis_client):
    fake_heartbeat(redis_client, fp16="failed")
    try:
        messages = switch(rollback_admin, "fp16")
    finally:
        heartbeat_delete("hb-test")
    assert any("hb-test: failed" in m for m in messages)
    assert VariantChange.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"reason": "   "}, "Give a reason"),
        ({"to_variant": "gptq-int4"}, "already the active variant"),
        ({"to_variant": "int3"}, "Unknown variant"),
        ({"expected_from": "fp16"}, "switched to gptq-int4 by someone else"),
    ],
)
def test_bad_toggles_are_refused_with_a_clear_message(rollback_admin, redis_client, data, words):
    fake_heartbeat(redis_client, fp16="ready")
    try:
        messages = switch(rollback_admin, **{"to_variant": "fp16", **data})
    finally:
        heartbeat_delete("hb-test")
    assert any(words in m for m in messages), messages
    assert active_variant_get(fresh=True) == "gptq-int4"
    assert VariantChange.objects.count() == 0


def test_unconfirmed_toggle_changes_nothing(rollback_admin):
    response = rollback_admin.post(URL, {"action": "switch", "to_variant": "fp16", "reason": "r"}, follow=True)
    assert any("confirmation" in str(m) for m in response.context["messages"])
    assert not ServingState.objects.exists()


def test_two_admins_switching_at_once_one_wins_the_other_is_told(rollback_admin, redis_client):
    fake_heartbeat(redis_client, fp16="ready")
    try:
        first = switch(rollback_admin, "fp16", expected_from="gptq-int4")
        second = switch(rollback_admin, "fp16", expected_from="gptq-int4")
    finally:
        heartbeat_delete("hb-test")
    assert any("now run on fp16" in m for m in first)
    assert any("by someone else" in m for m in second)
    assert VariantChange.objects.count() == 1


def test_audit_history_cannot_be_edited_in_the_admin(rollback_admin, redis_client):
    fake_heartbeat(redis_client, fp16="ready")
    try:
        switch(rollback_admin, "fp16")
    finally:
        heartbeat_delete("hb-test")
    change = VariantChange.objects.get()
    assert change.changed_by.username == "ops"
    assert (change.from_variant, change.to_variant) == ("gptq-int4", "fp16")
    url = f"/admin/serving/variantchange/{change.pk}/change/"
    page = rollback_admin.get(url)
    assert page.status_code == 200 and 'name="reason"' not in page.content.decode()
    rollback_admin.post(url, {"reason": "rewritten"})
    rollback_admin.post(f"/admin/serving/variantchange/{change.pk}/delete/", {"post": "yes"})
    change.refresh_from_db()
    assert change.reason == "4-bit answers about refunds are wrong"


def test_a_comparison_whose_worker_died_is_ended_failed_by_the_sweep_and_the_page_says_so(rollback_admin, redis_client):
    from django.utils import timezone

    from chatbot.serving.models import VariantComparison
    from chatbot.serving.services import comparison_fail_orphans, comparison_start

    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    dead = VariantComparison.objects.create()
    assert comparison_start(comparison_id=dead.pk, worker="gone")
    assert not comparison_start(comparison_id=dead.pk, worker="other")  # a redelivered task runs nothing
    alive = VariantComparison.objects.create()
    comparison_start(comparison_id=alive.pk, worker="hb-test")
    fresh = VariantComparison.objects.create()
    comparison_start(comparison_id=fresh.pk, worker="gone-too")  # just started: its worker may not have beaten yet
    VariantComparison.objects.filter(pk__in=[dead.pk, alive.pk]).update(started_at=long_ago)
    fake_heartbeat(redis_client, fp16="ready")
    try:
        assert comparison_fail_orphans() == 1
    finally:
        heartbeat_delete("hb-test")
    dead.refresh_from_db()
    assert dead.status == VariantComparison.Status.FAILED and dead.finished_at is not None
    assert "worker gone stopped while running it" in dead.error
    statuses = dict(VariantComparison.objects.values_list("pk", "status"))
    assert statuses[alive.pk] == statuses[fresh.pk] == VariantComparison.Status.RUNNING
    VariantComparison.objects.filter(pk__in=[alive.pk, fresh.pk]).update(status=VariantComparison.Status.DONE)
    page = rollback_admin.get(URL).content.decode()
    assert "The last comparison failed: worker gone stopped while running it; run it again" in page


def test_run_the_comparison_now_queues_one_at_a_time(rollback_admin, redis_client):
    """A second request while one is pending or running is refused with words that say so, and
    queues nothing; once it ended, the next is taken. One that no worker took for longer than
    the broker's visibility timeout no longer holds the next back."""
    from django.conf import settings
    from django.utils import timezone

    from chatbot.queues import COMPARE_QUEUE
    from chatbot.serving.models import VariantComparison
    from chatbot.serving.services import comparison_start

    def request_comparison() -> list[str]:
        response = rollback_admin.post(URL, {"action": "compare"}, follow=True)
        assert response.status_code == 200
        return [str(m) for m in response.context["messages"]]

    redis_client.delete(COMPARE_QUEUE)
    try:
        assert request_comparison() == ["Comparison queued; this page shows its result when a worker has run it."]
        first = VariantComparison.objects.get()
        for status in ("pending", "running"):
            if status == "running":
                assert comparison_start(comparison_id=first.pk, worker="w")
            (refused,) = request_comparison()
            assert refused.startswith("Comparison not queued: a comparison requested") and f"is {status}" in refused
            assert "by ops" in refused
            assert VariantComparison.objects.count() == 1
        assert redis_client.llen(COMPARE_QUEUE) == 1  # one task sent

        VariantComparison.objects.filter(pk=first.pk).update(status=VariantComparison.Status.DONE)
        assert request_comparison()[0].startswith("Comparison queued")
        second = VariantComparison.objects.exclude(pk=first.pk).get()

        VariantComparison.objects.filter(pk=second.pk).update(
            created_at=timezone.now() - timezone.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT_S + 1)
        )
        assert request_comparison()[0].startswith("Comparison queued")
        second.refresh_from_db()
        assert second.status == VariantComparison.Status.FAILED and "no worker took it" in second.error
        assert VariantComparison.objects.filter(status=VariantComparison.Status.PENDING).count() == 1
    finally:
        redis_client.delete(COMPARE_QUEUE)
