"""The agents' desk under load, against the running product (web server, Redis, worker):

    .venv/bin/python bench/desk.py [--url http://127.0.0.1:8000] [--busy 32] [--replies 25]
                                   [--conversations 10000] [--loads 20] [--json]
    BENCH_SCRIPT=bench/desk.py bench/path.sh --busy 32      # on a fresh database, as the docs run it

Two measurements:

1. **Agent -> customer**: an agent takes a conversation over at the desk and sends `--replies`
   messages, one every 2-3 s (an agent's pace); each is timed from the desk socket's send to the customer socket's
   `message.new`, while `--busy` other customers are getting bot answers (bench/load.py's
   customers, asking one question after another for the whole run).
2. **The desk's first load** with `--conversations` conversations in the database (written here
   first, two messages each, in every status): `GET /desk/` (the page), then the socket's
   connect and `hello` -> `desk.snapshot` (the lists), `--loads` times.

Writes a staff user and its session through Django, so run it with the product's settings
(`bench/path.sh` sets them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import time
import urllib.request
import uuid

import websockets
from common import percentile, print_table, setup_django
from load import customer as crowd_customer
from load import session_cookie

AGENT = "bench-agent"


def bot_answers_since(started: float) -> int:
    import datetime as dt

    from chatbot.conversations.models import Message

    since = dt.datetime.fromtimestamp(started, tz=dt.UTC)
    return Message.objects.filter(author=Message.Author.BOT, created_at__gte=since).count()


def agent_cookie() -> str:
    """A staff member with the desk's permission, logged in: their session cookie."""
    from django.conf import settings
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    user, _ = User.objects.get_or_create(username=AGENT, defaults={"first_name": "Bench", "is_staff": True})
    user.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def recv_type(socket, frame_type: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == frame_type:
            return frame
        if frame["type"] == "error":
            raise RuntimeError(f"refused: {frame}")


def run_crowd(base_url: str, busy: int) -> None:
    """`busy` customers asking bot questions without a pause (bench/load.py's customers, three
    questions in a conversation, then a new customer), until the process is stopped."""

    async def keep_asking(index: int) -> None:
        while True:
            await crowd_customer(base_url, index, 3, [], [])

    async def everyone() -> None:
        await asyncio.gather(*(keep_asking(i) for i in range(busy)))

    asyncio.run(everyone())


async def read_all(socket, refusals: list[dict]) -> None:
    """Read every frame a socket gets (a page would draw them); keep its refusals."""
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "error":
            refusals.append(frame)


async def agent_to_customer(base_url: str, busy: int, replies: int) -> dict:
    ws = base_url.replace("http", "ws", 1)
    cookie = await asyncio.to_thread(agent_cookie)
    # The crowd asks from a process of its own, so that its hundreds of frames a second are not
    # read by the loop that times the agent's messages.
    crowd = multiprocessing.get_context("spawn").Process(target=run_crowd, args=(base_url, busy), daemon=True)
    if busy:
        crowd.start()
    latencies: list[float] = []
    refusals: list[dict] = []
    started = time.time()
    try:
        await asyncio.sleep(5 if busy else 0)  # the crowd's answers are streaming
        customer_cookie = await asyncio.to_thread(session_cookie, base_url)
        async with (
            websockets.connect(
                ws + "/ws/chat/", additional_headers={"Cookie": customer_cookie, "Origin": base_url}
            ) as customer,
            websockets.connect(ws + "/ws/desk/", additional_headers={"Cookie": cookie, "Origin": base_url}) as desk,
        ):
            await customer.send(json.dumps({"type": "conversation.new"}))
            await recv_type(customer, "history")
            await customer.send(json.dumps({"type": "handoff.request"}))
            conversation_id = (await recv_type(customer, "conversation.updated"))["conversation"]["id"]
            # The desk hears of every conversation's changes (the crowd's too), as a desk page does.
            drain = asyncio.create_task(read_all(desk, refusals))
            await desk.send(json.dumps({"type": "conversation.claim", "conversation_id": conversation_id}))
            await recv_type(customer, "message.new")  # "... joined the conversation"
            for index in range(replies):
                text = f"Reply number {index}: let me check that for you."
                sent = time.perf_counter()
                frame = {
                    "type": "message.send",
                    "conversation_id": conversation_id,
                    "text": text,
                    "client_id": uuid.uuid4().hex,
                }
                await desk.send(json.dumps(frame))
                while True:
                    event = await recv_type(customer, "message.new")
                    if event["message"]["text"] == text:
                        break
                if refusals:
                    raise RuntimeError(f"the desk refused a reply: {refusals[0]}")
                latencies.append((time.perf_counter() - sent) * 1000)
                # An agent's pace (and under the socket's WS_MAX_MESSAGES_PER_MINUTE).
                await asyncio.sleep(random.uniform(2.0, 3.0))
            drain.cancel()
    finally:
        if crowd.is_alive():
            crowd.terminate()
            crowd.join(timeout=30)
    answers = await asyncio.to_thread(bot_answers_since, started)
    return {
        "busy_customers": busy,
        "replies": len(latencies),
        "bot_answers_meanwhile": answers,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "max_ms": max(latencies) if latencies else float("nan"),
    }


def seed_conversations(count: int) -> int:
    """`count` conversations in every status, two messages each, written in bulk; returns how
    many the database holds."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from chatbot.conversations.models import Conversation, Message

    agent = User.objects.get(username=AGENT)
    existing = Conversation.objects.count()
    now = timezone.now()
    statuses = (
        [Conversation.Status.RESOLVED] * 6
        + [Conversation.Status.BOT] * 2
        + [
            Conversation.Status.WAITING_FOR_AGENT,
            Conversation.Status.WITH_AGENT,
        ]
    )
    batch = []
    for index in range(max(0, count - existing)):
        status = statuses[index % len(statuses)]
        at = now - timezone.timedelta(minutes=index % 20_000)
        batch.append(
            Conversation(
                visitor_id=f"bench-{index}",
                status=status,
                assigned_agent=agent if status == Conversation.Status.WITH_AGENT else None,
                handoff_reason="customer_request" if status != Conversation.Status.BOT else "",
                last_message_at=at,
                escalated_at=at if status != Conversation.Status.BOT else None,
                resolved_at=at if status == Conversation.Status.RESOLVED else None,
            )
        )
        if len(batch) == 1000:
            _write(batch, Message)
            batch = []
    if batch:
        _write(batch, Message)
    return Conversation.objects.count()


def _write(conversations, message_model) -> None:
    from chatbot.conversations.models import Conversation

    created = Conversation.objects.bulk_create(conversations)
    message_model.objects.bulk_create(
        message
        for conversation in created
        for message in (
            message_model(conversation=conversation, author="customer", text="Where is my order 1234?"),
            message_model(conversation=conversation, author="bot", text="It ships within one business day."),
        )
    )


def fetch(url: str, cookie: str) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie})) as response:
        return response.read()


async def first_load(base_url: str, loads: int) -> dict:
    cookie = await asyncio.to_thread(agent_cookie)
    ws = base_url.replace("http", "ws", 1) + "/ws/desk/"
    page, lists, total = [], [], []
    for _ in range(loads):
        started = time.perf_counter()
        await asyncio.to_thread(fetch, base_url + "/desk/", cookie)
        loaded = time.perf_counter()
        async with websockets.connect(
            ws, additional_headers={"Cookie": cookie, "Origin": base_url}, max_size=2**24
        ) as desk:
            await desk.send(json.dumps({"type": "hello"}))
            snapshot = await recv_type(desk, "desk.snapshot")
        done = time.perf_counter()
        page.append((loaded - started) * 1000)
        lists.append((done - loaded) * 1000)
        total.append((done - started) * 1000)
    return {
        "loads": loads,
        "listed": {name: len(rows) for name, rows in snapshot["lists"].items()},
        "page_p50_ms": percentile(page, 50),
        "page_p95_ms": percentile(page, 95),
        "socket_and_lists_p50_ms": percentile(lists, 50),
        "socket_and_lists_p95_ms": percentile(lists, 95),
        "total_p50_ms": percentile(total, 50),
        "total_p95_ms": percentile(total, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--busy", type=int, default=32, help="customers getting bot answers meanwhile")
    parser.add_argument("--replies", type=int, default=25, help="agent replies, one every 2-3 s")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup_django()
    from django.db import connection

    base_url = args.url.rstrip("/")
    latency = asyncio.run(agent_to_customer(base_url, args.busy, args.replies))
    stored = seed_conversations(args.conversations)
    load = asyncio.run(first_load(base_url, args.loads))
    report = {"database": connection.vendor, "conversations": stored, "agent_to_customer": latency, "first_load": load}
    if args.json:
        print(json.dumps(report))
        return
    print(f"agent -> customer message, while {latency['busy_customers']} customers get bot answers")
    print_table(
        ["replies", "bot answers meanwhile", "p50 ms", "p95 ms", "max ms"],
        [
            [
                latency["replies"],
                latency["bot_answers_meanwhile"],
                latency["p50_ms"],
                latency["p95_ms"],
                latency["max_ms"],
            ]
        ],
    )
    print(f"\nthe desk's first load, {stored:,} conversations in {connection.vendor} (rows listed: {load['listed']})")
    print_table(
        ["loads", "page p50 ms", "page p95 ms", "socket+lists p50", "socket+lists p95", "total p50 ms", "total p95 ms"],
        [
            [
                load["loads"],
                load["page_p50_ms"],
                load["page_p95_ms"],
                load["socket_and_lists_p50_ms"],
                load["socket_and_lists_p95_ms"],
                load["total_p50_ms"],
                load["total_p95_ms"],
            ]
        ],
    )


if __name__ == "__main__":
    main()
