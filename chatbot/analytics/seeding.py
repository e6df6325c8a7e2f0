"""Realistic support history for the demo's analytics and the analytics benchmark: conversations
over the past days on both model variants, with handoffs, agents, resolutions and ratings with
comments, and a rollback episode in the audit trail. Written in bulk, deterministic from a seed."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from chatbot.conversations.models import Conversation, Generation, Message, Rating
from chatbot.serving.models import VariantChange

AGENTS = [("alex", "Alex"), ("sam", "Sam"), ("kim", "Kim")]
QUESTIONS = [
    "Where is my order?",
    "How do I return an item?",
    "My payment failed, what can I do?",
    "Can I change my delivery address?",
    "When does my refund arrive?",
    "The parcel arrived damaged.",
    "How long does shipping take?",
    "I forgot my password.",
]
ANSWERS = [
    "You can follow your order in your account under Orders.",
    "Returns are free within 30 days: start one from the Orders page.",
    "Please check your card details and 3-D Secure, or try another payment method.",
    "You can change the address until the order ships.",
    "Refunds are issued within 5 business days of the return arriving.",
]
COMMENTS = {
    5: ["Quick and clear, thanks!", "Solved in a minute.", "Very helpful."],
    4: ["Good answer, a bit slow.", "Helpful."],
    3: ["It was okay.", "Had to ask twice."],
    2: ["The bot did not understand me.", "Took too long."],
    1: ["Useless answer.", "Nobody helped me."],
}
REASONS = ["customer_request", "customer_request", "bot_failed", "no_answer_twice", "agent_takeover"]


@dataclass
class Seeded:
    conversations: int
    messages: int
    ratings: int


@contextmanager
def _stamped_by_hand() -> Iterator[None]:
    """Bulk writes keep the creation times given here: `auto_now_add` would stamp every row
    with now."""
    fields = [model._meta.get_field("created_at") for model in (Conversation, Message, Generation, Rating)]
    for field in fields:
        field.auto_now_add = False
    try:
        yield
    finally:
        for field in fields:
            field.auto_now_add = True


def _agents() -> list:
    permission = Permission.objects.get(codename="handle_conversations")
    users = []
    for username, name in AGENTS:
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"first_name": name, "is_staff": True}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        user.user_permissions.add(permission)
        users.append(user)
    return users


def _moment(rng: random.Random, now: dt.datetime, days: int) -> dt.datetime:
    """A time in the past `days`, busier on weekdays and in office hours."""
    while True:
        day = now - dt.timedelta(days=rng.uniform(0, days))
        hour = rng.choices(
            range(24), weights=[1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 12, 13, 14, 13, 12, 10, 9, 8, 7, 5, 3, 2]
        )[0]
        moment = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))
        if moment < now and (moment.weekday() < 5 or rng.random() < 0.5):
            return moment


def seed_history(*, conversations: int, days: int = 90, seed: int = 7, batch: int = 2000) -> Seeded:
    rng = random.Random(seed)
    now = timezone.now()
    agents = _agents()
    # A rollback episode: the 4-bit model served until `rollback`, FP16 for three days, then back.
    rollback = now - dt.timedelta(days=days * 0.4)
    back = rollback + dt.timedelta(days=3)
    seeded = Seeded(0, 0, 0)
    with _stamped_by_hand():
        with transaction.atomic():
            VariantChange.objects.create(
                from_variant="gptq-int4", to_variant="fp16", reason="4-bit answers about refunds were wrong (seeded)"
            )
            VariantChange.objects.create(
                from_variant="fp16", to_variant="gptq-int4", reason="fixed 4-bit checkpoint deployed (seeded)"
            )
            VariantChange.objects.filter(reason__endswith="wrong (seeded)").update(changed_at=rollback)
            VariantChange.objects.filter(reason__endswith="deployed (seeded)").update(changed_at=back)
        remaining = conversations
        while remaining > 0:
            count = min(batch, remaining)
            _write_batch(rng, count, now, days, agents, (rollback, back), seeded)
            remaining -= count
    return seeded


def _write_batch(rng, count, now, days, agents, rollback, seeded) -> None:
    plans = []
    for _ in range(count):
        start = _moment(rng, now, days)
        variant = "fp16" if rollback[0] <= start < rollback[1] else "gptq-int4"
        handoff = rng.random() < 0.22
        resolved = rng.random() < (0.8 if handoff else 0.75)
        agent = rng.choice(agents) if handoff and rng.random() < 0.9 else None
        plans.append((start, variant, handoff, resolved, agent))
    with transaction.atomic():
        rows = []
        for start, _variant, handoff, resolved, agent in plans:
            escalated = start + dt.timedelta(seconds=rng.uniform(20, 300)) if handoff else None
            replied = escalated + dt.timedelta(seconds=rng.lognormvariate(4.5, 0.8)) if agent else None
            resolved_at = (replied or start) + dt.timedelta(seconds=rng.lognormvariate(6.5, 0.9)) if resolved else None
            if resolved_at is not None and resolved_at > now:
                resolved_at = None
            status = (
                Conversation.Status.RESOLVED
                if resolved_at
                else (Conversation.Status.WITH_AGENT if agent else Conversation.Status.WAITING_FOR_AGENT)
                if handoff
                else Conversation.Status.BOT
            )
            rows.append(
                Conversation(
                    visitor_id=f"seed-{rng.getrandbits(48):x}",
                    status=status,
                    created_at=start,
                    last_message_at=start,
                    assigned_agent=agent if status == Conversation.Status.WITH_AGENT else None,
                    handoff_reason=rng.choice(REASONS) if handoff else "",
                    escalated_at=escalated,
                    first_agent_reply_at=replied,
                    resolved_at=resolved_at,
                    resolved_by=("agent" if agent else rng.choice(["bot", "customer"])) if resolved_at else "",
                    resolved_by_agent=agent if resolved_at and agent else None,
                )
            )
        created = Conversation.objects.bulk_create(rows, batch_size=2000)
        first_bot_reply: dict[int, dt.datetime] = {}
        messages, generations, ratings = [], [], []
        for conversation, (start, variant, _handoff, _resolved, agent) in zip(created, plans, strict=True):
            at = start
            turns = rng.choices([1, 2, 3, 4], weights=[45, 30, 15, 10])[0]
            for _ in range(turns):
                messages.append(
                    Message(conversation=conversation, author="customer", text=rng.choice(QUESTIONS), created_at=at)
                )
                ttft = rng.lognormvariate(5.3 if variant == "gptq-int4" else 5.6, 0.35)
                at = at + dt.timedelta(seconds=rng.uniform(1.5, 6))
                failed = rng.random() < 0.02
                if not failed:
                    first_bot_reply.setdefault(conversation.pk, at)
                    messages.append(
                        Message(
                            conversation=conversation,
                            author="bot",
                            text=rng.choice(ANSWERS),
                            reasoning="The customer asks about their order.",
                            model_variant=variant,
                            created_at=at,
                            prompt_tokens=rng.randint(40, 400),
                            completion_tokens=rng.randint(20, 90),
                            queue_wait_ms=rng.lognormvariate(2.5, 0.8),
                            time_to_first_token_ms=ttft,
                            engine_time_to_first_token_ms=ttft * 0.7,
                            latency_ms=ttft + rng.uniform(400, 2500),
                            tokens_per_s=rng.gauss(52 if variant == "gptq-int4" else 41, 6),
                            no_answer=rng.random() < 0.03,
                        )
                    )
                else:
                    generations.append((conversation, variant, at))
                at = at + dt.timedelta(seconds=rng.uniform(10, 120))
            if agent and conversation.first_agent_reply_at:
                messages.append(
                    Message(
                        conversation=conversation,
                        author="agent",
                        author_user=agent,
                        text="Hi, I'm here to help.",
                        created_at=conversation.first_agent_reply_at,
                    )
                )
            if conversation.resolved_at and rng.random() < 0.45:
                score = rng.choices([1, 2, 3, 4, 5], weights=[6, 8, 12, 30, 44] if not agent else [4, 6, 10, 30, 50])[0]
                ratings.append(
                    Rating(
                        conversation=conversation,
                        score=score,
                        comment=rng.choice(COMMENTS[score]) if rng.random() < 0.4 else "",
                        created_at=conversation.resolved_at + dt.timedelta(seconds=rng.uniform(5, 120)),
                        credited_to="agent" if agent else "bot",
                        agent=agent,
                    )
                )
        Message.objects.bulk_create(messages, batch_size=5000)
        for conversation in created:
            replies = [t for t in (first_bot_reply.get(conversation.pk), conversation.first_agent_reply_at) if t]
            conversation.first_response_at = min(replies) if replies else None
        Conversation.objects.bulk_update(created, ["first_response_at"], batch_size=2000)
        prompts = {}
        for message in messages:
            if message.author == "customer":
                prompts.setdefault(message.conversation_id, message)
        Generation.objects.bulk_create(
            [
                Generation(
                    conversation=conversation,
                    prompt_message=prompts[conversation.pk],
                    model_variant=variant,
                    status=Generation.Status.FAILED,
                    error="seeded failure",
                    created_at=at,
                )
                for conversation, variant, at in generations
            ],
            batch_size=5000,
        )
        Rating.objects.bulk_create(ratings, batch_size=5000)
    seeded.conversations += len(created)
    seeded.messages += len(messages)
    seeded.ratings += len(ratings)
