"""Load benchmark: N concurrent customers over real WebSockets against the running product (web
server, Redis, worker; start it with `make run`).

    .venv/bin/python bench/load.py [--url http://127.0.0.1:8000] [--customers 1,8,32] [--messages 3]
                                   [--ramp 0] [--warmup 4] [--first-together] [--json]

Each customer loads the chat page (for its session cookie), opens the socket and a
conversation, and sends its messages one after another, each when the previous answer is
complete. All customers arrive at the same instant (a burst: each sends its first message as
soon as its chat is open), or spread evenly over --ramp seconds; with --first-together, every
customer opens the chat first and then all the first messages leave at the same instant. Measured per message:
send -> first streamed event of the model's output (`answer.thinking` or `answer.delta`),
send -> first answer text (`answer.delta`, after the reasoning: what the customer waits to read
a word), and send -> `answer.done`; p50/p95/p99 and errors per level of concurrency. The path's overhead is
the customer's time to first token minus the engine's own (submission to the batch -> first
token, stored on each message), i.e. web -> Redis -> Celery -> worker -> Redis -> socket.
Reads the stored messages through Django, so run it with the product's settings.

Before the first level, --warmup customers (default 4) each send two messages at once, not
measured: a freshly started server opens its database connections, threads and code paths on
its first messages, and that cold start (once per process) is not the steady state the levels
measure. `--warmup 0` measures from cold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
import uuid
from http.cookies import SimpleCookie

import websockets
from common import percentile, print_table, setup_django

QUESTIONS = [
    "Where is my order?",
    "How long does shipping take?",
    "How do I return an item?",
    "My payment failed, what can I do?",
    "Can I change my delivery address?",
    "What are your opening hours?",
]


def session_cookie(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/") as response:
        cookie = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie.load(header)
    return "; ".join(f"{key}={morsel.value}" for key, morsel in cookie.items())


async def customer(
    base_url: str,
    index: int,
    messages: int,
    results: list,
    errors: list,
    delay: float = 0.0,
    ready: asyncio.Barrier | None = None,
) -> None:
    await asyncio.sleep(delay)
    try:
        cookie = await asyncio.to_thread(session_cookie, base_url)
        ws_url = base_url.replace("http", "ws", 1) + "/ws/chat/"
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie, "Origin": base_url}, max_size=2**20
        ) as socket:
            await socket.send(json.dumps({"type": "conversation.new"}))
            await socket.recv()
            if ready is not None:  # a burst: every customer's first message leaves at the same instant
                await ready.wait()
            for turn in range(messages):
                question = QUESTIONS[(index + turn) % len(QUESTIONS)]
                sent, sent_wall = time.perf_counter(), time.time()
                await socket.send(json.dumps({"type": "message.send", "text": question, "client_id": uuid.uuid4().hex}))
                first, first_wall, answer = None, None, None
                while True:
                    event = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
                    kind = event["type"]
                    if kind in ("answer.thinking", "answer.delta") and first is None:
                        first, first_wall = time.perf_counter(), time.time()
                    if kind == "answer.delta" and answer is None:
                        answer = time.perf_counter()
                    elif kind == "answer.done":
                        done = time.perf_counter()
                        results.append(
                            {
                                "first_ms": ((first or done) - sent) * 1000,
                                "answer_ms": None if answer is None else (answer - sent) * 1000,
                                "done_ms": (done - sent) * 1000,
                                "message_id": event["message"]["id"],
                                "sent_wall": sent_wall,
                                "first_wall": first_wall,
                                "turn": turn,
                            }
                        )
                        break
                    elif kind in ("generation.failed", "error", "generation.cancelled"):
                        errors.append(kind + ": " + event.get("detail", event.get("code", "")))
                        break
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
        errors.append(f"{type(exc).__name__}: {exc}")
        if ready is not None:
            await ready.abort()  # the others stop waiting for a customer who never got in (no-op once past it)


async def run_level(base_url: str, customers: int, messages: int, ramp: float = 0.0, together: bool = False) -> dict:
    results: list[dict] = []
    errors: list[str] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    # Each customer opens the chat (page, socket, conversation) when its start comes and sends at
    # once; with `together`, every customer opens the chat first and then all the first messages
    # leave at the same instant.
    ready = asyncio.Barrier(customers) if together else None
    await asyncio.gather(
        *(
            customer(base_url, i, messages, results, errors, delay=ramp * i / customers, ready=ready)
            for i in range(customers)
        )
    )
    elapsed = time.perf_counter() - started
    # This process shares the machine with the product: its own CPU (every thread) is said.
    client_cpu_s = time.process_time() - cpu_started
    stored = await asyncio.to_thread(stored_measures, [r["message_id"] for r in results])
    by_turn = [
        (r["turn"], r["first_ms"] - stored[r["message_id"]]["engine_ttft"])
        for r in results
        if stored.get(r["message_id"])
    ]
    overhead = [value for _, value in by_turn]
    # Every customer's first message leaves at the same instant (and opens a conversation): a
    # burst. The later ones leave when each customer's previous answer is done.
    first_turn = [value for turn, value in by_turn if turn == 0]
    later_turns = [value for turn, value in by_turn if turn > 0]
    hops = path_hops(results, stored)
    first_hops = path_hops([r for r in results if r["turn"] == 0], stored)
    first = [r["first_ms"] for r in results]
    answered = [r["answer_ms"] for r in results if r["answer_ms"] is not None]
    done = [r["done_ms"] for r in results]
    first_sends = [r["sent_wall"] for r in results if r["turn"] == 0]
    return {
        "customers": customers,
        "first_messages_span_ms": (max(first_sends) - min(first_sends)) * 1000 if first_sends else float("nan"),
        "answers": len(results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": elapsed,
        "client_cpu_ms_per_answer": client_cpu_s * 1000 / len(results) if results else float("nan"),
        "first_p50_ms": percentile(first, 50),
        "first_p95_ms": percentile(first, 95),
        "first_p99_ms": percentile(first, 99),
        "answer_p50_ms": percentile(answered, 50),
        "answer_p95_ms": percentile(answered, 95),
        "done_p50_ms": percentile(done, 50),
        "done_p95_ms": percentile(done, 95),
        "done_p99_ms": percentile(done, 99),
        "path_overhead_p50_ms": percentile(overhead, 50),
        "path_overhead_p95_ms": percentile(overhead, 95),
        "path_overhead_first_message_p50_ms": percentile(first_turn, 50),
        "path_overhead_first_message_p95_ms": percentile(first_turn, 95),
        "path_overhead_later_messages_p50_ms": percentile(later_turns, 50),
        "path_overhead_later_messages_p95_ms": percentile(later_turns, 95),
        "hops": {name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)} for name, v in hops.items()},
        "first_message_hops": {
            name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)} for name, v in first_hops.items()
        },
    }


HOPS = {
    "web: send -> saved, enqueued": "socket frame in, message and generation saved, task sent to Redis",
    "celery: enqueued -> claimed": "Redis -> worker -> task thread -> generation claimed in PostgreSQL",
    "worker: claimed -> in the batch": "prompt built from the history, submitted to the engine",
    "engine: first token": "submission -> first token (the engine's own time to first token)",
    "worker: token -> stream pump": "the worker's stream pump picks the first token up",
    "out: published -> customer": "group_send -> Redis -> web process -> socket -> customer",
}


def path_hops(results: list[dict], stored: dict) -> dict[str, list[float]]:
    """Splits each answer's send -> first output into the path's hops, from the client's clock
    and the stored timestamps (same machine, same clock)."""
    hops: dict[str, list[float]] = {name: [] for name in HOPS}
    for r in results:
        s = stored.get(r["message_id"])
        if not s or r["first_wall"] is None or s["started_at"] is None:
            continue
        created, started = s["created_at"], s["started_at"]
        admitted = created + s["queue_wait_ms"] / 1000
        first_seen = created + s["ttft_ms"] / 1000
        values = [
            created - r["sent_wall"],
            started - created,
            admitted - started,
            s["engine_ttft"] / 1000,
            first_seen - admitted - s["engine_ttft"] / 1000,
            r["first_wall"] - first_seen,
        ]
        for name, value in zip(HOPS, values, strict=True):
            hops[name].append(value * 1000)
    return hops


def stored_measures(message_ids: list[int]) -> dict[int, dict]:
    from chatbot.conversations.models import Message

    stored = {}
    for message in Message.objects.filter(pk__in=message_ids).select_related("generation"):
        if message.engine_time_to_first_token_ms is None or message.generation is None:
            continue
        generation = message.generation
        stored[message.pk] = {
            "engine_ttft": message.engine_time_to_first_token_ms,
            "queue_wait_ms": message.queue_wait_ms,
            "ttft_ms": message.time_to_first_token_ms,
            "created_at": generation.created_at.timestamp(),
            "started_at": generation.started_at.timestamp() if generation.started_at else None,
        }
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--customers", default="1,8,32")
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which customers start (0: all at once)")
    parser.add_argument("--warmup", type=int, default=4, help="customers of the unmeasured warm-up (0: none)")
    parser.add_argument(
        "--first-together",
        action="store_true",
        help="every customer opens the chat first, then all first messages leave at the same instant",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup_django()
    if args.warmup:
        warm = asyncio.run(run_level(args.url.rstrip("/"), args.warmup, 2))
        if not args.json:
            print(
                f"warm-up (not measured): {warm['customers']} customers, {warm['answers']} answers, {warm['errors']} errors\n"
            )
    rows = [
        asyncio.run(run_level(args.url.rstrip("/"), int(n), args.messages, args.ramp, args.first_together))
        for n in args.customers.split(",")
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "url": args.url,
                    "messages_per_customer": args.messages,
                    "ramp_s": args.ramp,
                    "first_together": args.first_together,
                    "warmup_customers": args.warmup,
                    "levels": rows,
                }
            )
        )
        return
    print_table(
        [
            "customers",
            "answers",
            "errors",
            "first p50",
            "p95",
            "p99",
            "answer p50",
            "p95",
            "done p50",
            "p95",
            "p99",
            "path overhead p50",
            "p95",
        ],
        [
            [
                r["customers"],
                r["answers"],
                r["errors"],
                r["first_p50_ms"],
                r["first_p95_ms"],
                r["first_p99_ms"],
                r["answer_p50_ms"],
                r["answer_p95_ms"],
                r["done_p50_ms"],
                r["done_p95_ms"],
                r["done_p99_ms"],
                r["path_overhead_p50_ms"],
                r["path_overhead_p95_ms"],
            ]
            for r in rows
        ],
    )
    print(
        "(milliseconds; 'first' = send -> first streamed model output, reasoning included;"
        " 'answer' = send -> first answer text; overhead = that minus the engine's own time to first token)"
    )
    if args.first_together:
        start = "all leave at the same instant, once every customer has opened the chat"
    elif args.ramp:
        start = f"leave as the customers arrive, spread over {args.ramp:g} s"
    else:
        start = "leave as the customers arrive, all at once, each as soon as its chat is open"
    print(f"\nPath overhead by message (ms, p50 / p95): the first messages {start}, each opening a conversation;")
    print("each later one leaves when that customer's previous answer is done. Span: first send to last first send.")
    print_table(
        ["customers", "first messages' span", "first message", "later messages"],
        [
            [
                r["customers"],
                r["first_messages_span_ms"],
                f"{r['path_overhead_first_message_p50_ms']:.1f} / {r['path_overhead_first_message_p95_ms']:.1f}",
                f"{r['path_overhead_later_messages_p50_ms']:.1f} / {r['path_overhead_later_messages_p95_ms']:.1f}",
            ]
            for r in rows
        ],
    )
    print("\nWhere send -> first output goes, hop by hop (ms, p50 / p95; all messages, then the first ones):")
    print_table(
        ["hop", *(f"{r['customers']} customers" for r in rows), *(f"{r['customers']}, first" for r in rows), "what"],
        [
            [
                name,
                *(f"{r['hops'][name]['p50_ms']:.1f} / {r['hops'][name]['p95_ms']:.1f}" for r in rows),
                *(
                    f"{r['first_message_hops'][name]['p50_ms']:.1f} / {r['first_message_hops'][name]['p95_ms']:.1f}"
                    for r in rows
                ),
                what,
            ]
            for name, what in HOPS.items()
        ],
    )
    print(
        "\nThe load generator's own CPU (ms per answer; it shares the machine with the product): "
        + ", ".join(f"{r['customers']} customers {r['client_cpu_ms_per_answer']:.1f}" for r in rows)
    )
    for row in rows:
        for sample in row["error_samples"]:
            print(f"  error at {row['customers']} customers: {sample}")


if __name__ == "__main__":
    main()
