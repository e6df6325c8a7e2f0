"""The gradual rollout: the split's assignment (share and stickiness), the statistics, the live
comparison's figures, the guard's decision and its audit record, and the rollback page's forms."""

from __future__ import annotations

import math
import random
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from chatbot.conversations.models import Conversation, Generation, Message, Rating
from chatbot.conversations.services.customer import customer_message_post
from chatbot.serving import services
from chatbot.serving.guard import guard_assess
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_key
from chatbot.serving.models import Rollout, RolloutAssignment, ServingState, VariantChange
from chatbot.serving.selectors import (
    ArmFigures,
    active_variant_get,
    rollout_comparison,
    rollout_draw,
    serving_plan_get,
)
from chatbot.serving.statistics import two_proportion_test

URL = "/admin/serving/servingstate/"


# -- statistics ---------------------------------------------------------------------------------------


def test_two_proportion_test_on_known_cases():
    """30/100 against 10/100: pooled 0.2, z = 0.2 / sqrt(0.2 * 0.8 * 0.02) = 3.5355, one-sided p 0.000204."""
    test = two_proportion_test(candidate_hits=30, candidate_n=100, baseline_hits=10, baseline_n=100)
    assert test.z == pytest.approx(3.535534, abs=1e-5)
    assert test.p_value == pytest.approx(0.00020355, rel=1e-3)
    # 0.15 vs 0.10 on 200 each: pooled 0.125, se 0.033072, z 1.5119, p 0.06529.
    test = two_proportion_test(candidate_hits=30, candidate_n=200, baseline_hits=20, baseline_n=200)
    assert test.z == pytest.approx(1.511858, abs=1e-5)
    assert test.p_value == pytest.approx(0.065285, rel=1e-3)
    # Equal rates: no evidence either way; a better candidate: p above one half.
    assert two_proportion_test(candidate_hits=10, candidate_n=50, baseline_hits=20, baseline_n=100).p_value == 0.5
    assert two_proportion_test(candidate_hits=5, candidate_n=100, baseline_hits=20, baseline_n=100).p_value > 0.99


def test_two_proportion_test_without_data_or_spread_gives_no_evidence():
    for case in [(0, 0, 3, 10), (3, 10, 0, 0), (0, 50, 0, 50), (50, 50, 50, 50)]:
        test = two_proportion_test(
            candidate_hits=case[0], candidate_n=case[1], baseline_hits=case[2], baseline_n=case[3]
        )
        assert (test.z, test.p_value) == (0.0, 1.0)


# -- the split's assignment ----------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [5, 30, 50, 90])
def test_draws_of_random_conversations_put_the_share_on_the_candidate(percent):
    """20,000 public ids from a fixed seed: the share drawn below `percent` is within 1.5 points."""
    rng = random.Random(22)
    ids = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=22)) for _ in range(20000)]
    drawn = sum(rollout_draw(rollout_id=7, public_id=public_id) < percent / 100 for public_id in ids)
    assert abs(drawn / len(ids) - percent / 100) < 0.015
    # Deterministic: the same conversation draws the same in the same rollout, differently in another.
    assert rollout_draw(rollout_id=7, public_id=ids[0]) == rollout_draw(rollout_id=7, public_id=ids[0])
    assert rollout_draw(rollout_id=7, public_id=ids[0]) != rollout_draw(rollout_id=8, public_id=ids[0])


def fake_worker(redis_client, name: str = "hb-rollout") -> None:
    status = WorkerStatus(
        name=name,
        variants={"gptq-int4": {"state": "ready"}, "fp16": {"state": "ready"}},
        running=0,
        waiting=0,
        reported_at=time.time(),
    )
    redis_client.set(heartbeat_key(name), status.encode(), ex=60)


@pytest.fixture
def served(redis_client):
    fake_worker(redis_client)
    yield
    heartbeat_delete("hb-rollout")


@pytest.fixture
def ops(db):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_model_variant"))
    return user


def start_conversations(count: int, *, seed: int, prefix: str) -> list[Conversation]:
    """New conversations through the customer's service, with public ids from a fixed seed (the
    on-commit enqueue never runs: these tests' transactions are rolled back)."""
    rng = random.Random(seed)
    conversations = []
    for i in range(count):
        public_id = f"{prefix}{rng.getrandbits(64):016x}"
        result = customer_message_post(
            visitor_id=f"{prefix}-v{i}",
            conversation=None,
            text="Where is my order?",
            client_id="m1",
            new_public_id=public_id,
        )
        conversations.append(result.conversation)
    return conversations


def first_variant(conversation: Conversation) -> str:
    return conversation.generations.order_by("id").first().model_variant


@pytest.mark.django_db
def test_a_split_puts_its_share_of_new_conversations_on_the_candidate_and_each_keeps_its_variant(ops, served):
    services.rollout_share_set(user=ops, candidate="fp16", percent=30, reason="new fp16 checkpoint, step 1")
    conversations = start_conversations(400, seed=5, prefix="a")
    on_candidate = [c for c in conversations if first_variant(c) == "fp16"]
    assert abs(len(on_candidate) / 400 - 0.30) < 0.06  # binomial sd at n=400 is 0.023
    assignments = dict(RolloutAssignment.objects.values_list("conversation_id", "variant"))
    assert all(assignments[c.pk] == first_variant(c) for c in conversations)

    # Raising the share moves no conversation that has started: a second message runs where the first did.
    services.rollout_share_set(user=ops, candidate="fp16", percent=60, reason="step 2", expected_percent=30)
    for conversation in conversations[:60]:
        later = customer_message_post(
            visitor_id=conversation.visitor_id, conversation=conversation, text="And the refund?", client_id="m2"
        ).generation
        assert later.model_variant == first_variant(conversation)
    newer = start_conversations(200, seed=6, prefix="b")
    assert abs(sum(first_variant(c) == "fp16" for c in newer) / 200 - 0.60) < 0.1

    # Back at 0%: every new generation runs on the baseline, the candidate's conversations too.
    services.rollout_share_set(user=ops, candidate="fp16", percent=0, reason="answers look wrong")
    later = customer_message_post(
        visitor_id=on_candidate[0].visitor_id, conversation=on_candidate[0], text="Hello again?", client_id="m3"
    ).generation
    assert later.model_variant == "gptq-int4"
    assert all(first_variant(c) == "gptq-int4" for c in start_conversations(30, seed=7, prefix="c"))
    assert Rollout.objects.get().outcome == Rollout.Outcome.ROLLED_BACK


@pytest.mark.django_db
def test_share_changes_are_audited_and_100_percent_promotes_the_candidate(ops, served):
    services.rollout_share_set(user=ops, candidate="fp16", percent=10, reason="step 1")
    services.rollout_share_set(user=ops, candidate="fp16", percent=100, reason="all good")
    changes = list(VariantChange.objects.order_by("changed_at", "id"))
    assert [(c.kind, c.changed_by, c.from_variant, c.to_variant, c.percent_from, c.percent_to) for c in changes] == [
        ("share", ops, "gptq-int4", "fp16", 0, 10),
        ("share", ops, "gptq-int4", "fp16", 10, 100),
    ]
    assert changes[0].reason == "step 1" and changes[1].summary == "fp16 share 10% → 100%"
    assert active_variant_get(fresh=True) == "fp16"
    assert not serving_plan_get(fresh=True).splitting
    assert Rollout.objects.get().outcome == Rollout.Outcome.PROMOTED
    assert first_variant(start_conversations(1, seed=1, prefix="d")[0]) == "fp16"


@pytest.mark.django_db
def test_share_changes_are_refused_with_the_reason(ops, served, redis_client):
    refused = services.SwitchRefused
    with pytest.raises(refused, match="reason"):
        services.rollout_share_set(user=ops, candidate="fp16", percent=10, reason=" ")
    with pytest.raises(refused, match="active variant"):
        services.rollout_share_set(user=ops, candidate="gptq-int4", percent=10, reason="x")
    with pytest.raises(refused, match="0 to 100"):
        services.rollout_share_set(user=ops, candidate="fp16", percent=101, reason="x")
    services.rollout_share_set(user=ops, candidate="fp16", percent=10, reason="x")
    with pytest.raises(refused, match="already has 10%"):
        services.rollout_share_set(user=ops, candidate="fp16", percent=10, reason="x")
    with pytest.raises(refused, match="someone else"):
        services.rollout_share_set(user=ops, candidate="fp16", percent=20, reason="x", expected_percent=0)
    heartbeat_delete("hb-rollout")
    with pytest.raises(refused, match="No running worker can serve fp16"):
        services.rollout_share_set(user=ops, candidate="fp16", percent=20, reason="x")
    # Rolling back needs no worker for the candidate.
    services.rollout_share_set(user=ops, candidate="fp16", percent=0, reason="x")
    assert VariantChange.objects.count() == 2


@pytest.mark.django_db
def test_a_switch_ends_the_rollout(ops, served):
    services.rollout_share_set(user=ops, candidate="fp16", percent=20, reason="x")
    services.serving_variant_switch(user=ops, to_variant="fp16", reason="all in")
    state = ServingState.objects.get()
    assert (state.active_variant, state.rollout, state.candidate_percent) == ("fp16", None, 0)
    assert Rollout.objects.get().outcome == Rollout.Outcome.SWITCHED


# -- the comparison and the guard -----------------------------------------------------------------------


def arm_conversation(
    rollout: Rollout,
    variant: str,
    *,
    no_answer: bool = False,
    failed: bool = False,
    handed: bool = False,
    score: int | None = None,
    ttft: float = 100.0,
) -> Conversation:
    """A conversation of a rollout's arm with one answer (stored, "no answer", or failed)."""
    conversation = Conversation.objects.create(visitor_id="v", escalated_at=timezone.now() if handed else None)
    RolloutAssignment.objects.create(conversation=conversation, rollout=rollout, variant=variant)
    prompt = Message.objects.create(conversation=conversation, author=Message.Author.CUSTOMER, text="hi")
    generation = Generation.objects.create(
        conversation=conversation,
        prompt_message=prompt,
        model_variant=variant,
        status=Generation.Status.FAILED if failed else Generation.Status.DONE,
    )
    if not failed:
        Message.objects.create(
            conversation=conversation,
            author=Message.Author.BOT,
            text="answer",
            generation=generation,
            model_variant=variant,
            no_answer=no_answer,
            time_to_first_token_ms=ttft,
        )
    if score is not None:
        Rating.objects.create(conversation=conversation, score=score)
    return conversation


def running_rollout(percent: int = 30) -> Rollout:
    rollout = Rollout.objects.create(baseline="gptq-int4", candidate="fp16")
    ServingState.objects.update_or_create(
        pk=1, defaults={"active_variant": "gptq-int4", "rollout": rollout, "candidate_percent": percent}
    )
    return rollout


@pytest.mark.django_db
def test_the_comparison_counts_each_arm_on_its_own_conversations():
    rollout = running_rollout()
    for ttft in (100, 200, 300):
        arm_conversation(rollout, "gptq-int4", score=5, ttft=ttft)
    arm_conversation(rollout, "gptq-int4", failed=True, handed=True)
    arm_conversation(rollout, "fp16", no_answer=True, score=2)
    arm_conversation(rollout, "fp16", no_answer=True, handed=True)
    # A conversation from before the rollout does not count.
    Conversation.objects.create(visitor_id="old")
    comparison = rollout_comparison(rollout=rollout)
    base, cand = comparison.baseline, comparison.candidate
    assert (base.conversations, base.answers, base.failures, base.ended_conversations) == (4, 3, 1, 4)
    assert (base.failure_rate, base.handoff_rate, base.csat, base.rated) == (0.25, 0.25, 1.0, 3)
    assert base.ttft_p95_ms == pytest.approx(290.0)
    assert (cand.conversations, cand.answers, cand.no_answers, cand.no_answer_rate) == (2, 2, 2, 1.0)
    assert (cand.handoff_rate, cand.csat, cand.failure_rate) == (0.5, 0.0, 0.0)


def figures(variant: str, *, conversations: int, no_answer: int = 0, failed: int = 0, rated: int = 0, happy: int = 0):
    return ArmFigures(
        variant=variant,
        conversations=conversations,
        ended_conversations=conversations,
        failed_conversations=failed,
        answered_conversations=conversations,
        no_answer_conversations=no_answer,
        rated=rated,
        satisfied=happy,
    )


def test_the_guard_acts_only_beyond_the_threshold_the_noise_and_the_minimum_count(settings):
    settings.ROLLOUT_GUARD_MIN_CONVERSATIONS = 100
    settings.ROLLOUT_GUARD_MIN_RATINGS = 30
    settings.ROLLOUT_GUARD_NO_ANSWER_POINTS = 5.0
    settings.ROLLOUT_GUARD_CSAT_POINTS = 10.0
    settings.ROLLOUT_GUARD_ALPHA = 0.01

    def breached(baseline: ArmFigures, candidate: ArmFigures) -> list[str]:
        return [a.signal for a in guard_assess(baseline=baseline, candidate=candidate) if a.breached]

    # 30/100 vs 10/100 no-answers: +20 points, p 0.0002.
    assert breached(figures("b", conversations=100, no_answer=10), figures("c", conversations=100, no_answer=30)) == [
        "no_answer"
    ]
    # The same rates on too few conversations: not yet.
    assert breached(figures("b", conversations=99, no_answer=10), figures("c", conversations=99, no_answer=30)) == []
    # A gap far from noise but below the threshold (14% vs 10% on 5,000 each: +4 points, p < 1e-8): tolerated;
    # at the threshold (15%): acted on.
    baseline = figures("b", conversations=5000, no_answer=500)
    assessment = guard_assess(baseline=baseline, candidate=figures("c", conversations=5000, no_answer=700))[1]
    assert assessment.gap_points == pytest.approx(4.0) and assessment.p_value < 1e-8 and not assessment.breached
    assert breached(baseline, figures("c", conversations=5000, no_answer=750)) == ["no_answer"]
    # A gap over the threshold that could be noise (0.15 vs 0.10 on 200, p 0.065): tolerated.
    assert breached(figures("b", conversations=200, no_answer=20), figures("c", conversations=200, no_answer=30)) == []
    # CSAT: 60% against 90% satisfied on 40 ratings each; the minimum count is the ratings'.
    assert breached(
        figures("b", conversations=100, rated=40, happy=36), figures("c", conversations=100, rated=40, happy=24)
    ) == ["csat"]
    assert (
        breached(
            figures("b", conversations=100, rated=29, happy=27), figures("c", conversations=100, rated=29, happy=10)
        )
        == []
    )
    # A better candidate never trips it.
    assert breached(figures("b", conversations=500, no_answer=100), figures("c", conversations=500)) == []
    assert math.isclose(assessment.threshold_points, 5.0)


@pytest.fixture
def guard_settings(settings):
    settings.ROLLOUT_GUARD_MIN_CONVERSATIONS = 20
    settings.ROLLOUT_GUARD_ALPHA = 0.01
    settings.ROLLOUT_GUARD_NO_ANSWER_POINTS = 5.0
    return settings


def bad_candidate(rollout: Rollout) -> None:
    """40 baseline conversations with 2 "no answer" replies, 20 candidate ones with 12."""
    for i in range(40):
        arm_conversation(rollout, "gptq-int4", no_answer=i < 2)
    for i in range(20):
        arm_conversation(rollout, "fp16", no_answer=i < 12)


@pytest.mark.django_db
def test_the_guard_rolls_a_worse_candidate_back_with_the_evidence_in_the_audit_record(guard_settings):
    rollout = running_rollout(percent=30)
    bad_candidate(rollout)
    change = services.rollout_guard_check()
    assert change is not None
    assert (change.kind, change.changed_by, change.from_variant, change.to_variant) == (
        "guard_rollback",
        None,
        "gptq-int4",
        "fp16",
    )
    assert (change.percent_from, change.percent_to) == (30, 0)
    assert change.reason.startswith("Rolled back by the guard")
    assert "no-answer rate: fp16 60.0% (12/20 conversations) vs gptq-int4 5.0% (2/40)" in change.reason
    assert "+55.0 points (threshold 5)" in change.reason
    state = ServingState.objects.get()
    assert (state.rollout, state.candidate_percent) == (None, 0)
    rollout.refresh_from_db()
    assert rollout.outcome == Rollout.Outcome.GUARD and rollout.ended_at is not None
    (breach,) = rollout.guard_evidence["breaches"]
    assert (breach["signal"], breach["candidate_bad"], breach["candidate_n"]) == ("no_answer", 12, 20)
    assert len(rollout.guard_evidence["signals"]) == 4
    # New conversations all start on the baseline; the guard acts once and never rolls forward.
    assert not serving_plan_get(fresh=True).splitting
    assert services.rollout_guard_check() is None
    assert VariantChange.objects.count() == 1


@pytest.mark.django_db
def test_the_guard_waits_for_enough_conversations_and_does_nothing_when_turned_off(guard_settings, ops):
    rollout = running_rollout()
    for _ in range(19):
        arm_conversation(rollout, "fp16", no_answer=True)
    for _ in range(40):
        arm_conversation(rollout, "gptq-int4")
    assert services.rollout_guard_check() is None  # 19 candidate conversations < 20
    arm_conversation(rollout, "fp16", no_answer=True)
    services.rollout_guard_set(user=ops, enabled=False, reason="known noisy week, watching by hand")
    assert services.rollout_guard_check() is None
    assert ServingState.objects.get().candidate_percent == 30
    change = VariantChange.objects.get()
    assert (change.kind, change.changed_by, change.summary) == ("guard_setting", ops, "guard turned off")
    with pytest.raises(services.SwitchRefused, match="already off"):
        services.rollout_guard_set(user=ops, enabled=False, reason="again")
    services.rollout_guard_set(user=ops, enabled=True, reason="back on")
    assert services.rollout_guard_check().kind == "guard_rollback"


@pytest.mark.django_db
def test_staff_see_the_guard_banner_until_one_acknowledges_it(guard_settings, ops, client):
    analyst = User.objects.create_user("analyst", password="pw", is_staff=True)
    analyst.user_permissions.add(Permission.objects.get(codename="view_analytics"))
    rollout = running_rollout()
    bad_candidate(rollout)
    services.rollout_guard_check()
    client.force_login(ops)
    page = client.get(URL).content.decode()
    assert 'id="guard-alert"' in page and "rolled fp16 back to 0%" in page
    assert "no-answer rate: 12/20 conversations on fp16 vs 2/40 on gptq-int4" in page
    assert 'id="rollout-comparison"' in page and "the guard" in page
    client.force_login(analyst)
    analytics = client.get("/analytics/").content.decode()
    assert 'id="guard-alert"' in analytics and "Rollout of fp16 beside gptq-int4" in analytics
    csv = client.get("/analytics/export/rollout.csv").content.decode()
    assert csv.splitlines()[1].startswith("gptq-int4 (baseline),40,40,0,2,0.0,40,5.0,40")
    assert csv.splitlines()[2].startswith("fp16 (candidate),20,20,0,12,0.0,20,60.0,20")
    client.force_login(ops)
    client.post(URL, {"action": "acknowledge", "rollout": rollout.pk})
    assert 'id="guard-alert"' not in client.get(URL).content.decode()
    client.force_login(analyst)
    assert 'id="guard-alert"' not in client.get("/analytics/").content.decode()
    assert Rollout.objects.get().acknowledged_by == ops


@pytest.mark.django_db
def test_the_rollback_page_sets_the_share_and_turns_the_guard_off(ops, served, client):
    client.force_login(ops)
    data = {"action": "share", "candidate": "fp16", "percent": "25", "reason": "step 1", "expected_percent": "0"}
    response = client.post(URL, {**data, "confirm": "yes"}, follow=True)
    assert any("25% of new conversations now start on fp16" in str(m) for m in response.context["messages"])
    page = response.content.decode()
    assert "<strong>25%</strong> of new conversations" in page and 'id="guard-signals"' in page
    response = client.post(URL, {**data, "percent": "40", "expected_percent": "25"}, follow=True)
    assert any("Tick the confirmation box" in str(m) for m in response.context["messages"])
    response = client.post(URL, {"action": "guard", "enabled": "off", "reason": "watching by hand"}, follow=True)
    assert 'id="guard-state">off<' in response.content.decode()
    assert list(VariantChange.objects.order_by("id").values_list("kind", flat=True)) == ["share", "guard_setting"]
