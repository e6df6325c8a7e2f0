"""Load benchmark: N concurrent customers over real WebSockets against the running product (web
server, Redis, worker; start it with `make run`).

    .venv/bin/python bench/load.py [--url http://127.0.0.1:8000] [--customers 1,8,32] [--messages 3] [--json]

Each customer loads the chat page (for its session cookie), opens the socket, and sends its
messages one after another, each when the previous answer is complete. Measured per message:
send -> first streamed event of the model's output (`answer.thinking` or `answer.delta`), and
send -> `answer.done`; p50/p95/p99 and errors per level of concurrency. The path's overhead is
the customer's time to first token minus the engine's own (submission to the batch -> first
token, stored on each message), i.e. web -> Redis -> Celery -> worker -> Redis -> socket.
Reads the stored messages through Django, so run it with the product's settings.
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


async def customer(base_url: str, index: int, messages: int, results: list, errors: list) -> None:
    cookie = await asyncio.to_thread(session_cookie, base_url)
    ws_url = base_url.replace("http", "ws", 1) + "/ws/chat/"
    try:
        async with websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": base_url}, max_size=2**20) as socket:
            await socket.send(json.dumps({"type": "conversation.new"}))
            await socket.recv()
            for turn in range(messages):
                question = QUESTIONS[(index + turn) % len(QUESTIONS)]
                sent = time.perf_counter()
                await socket.send(json.dumps({"type": "message.send", "text": question, "client_id": uuid.uuid4().hex}))
                first = None
                while True:
                    event = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
                    kind = event["type"]
                    if kind in ("answer.thinking", "answer.delta") and first is None:
                        first = time.perf_counter()
                    elif kind == "answer.done":
                        done = time.perf_counter()
                        results.append(
                            {"first_ms": ((first or done) - sent) * 1000, "done_ms": (done - sent) * 1000, "message_id": event["message"]["id"]}
                        )
                        break
                    elif kind in ("generation.failed", "error", "generation.cancelled"):
                        errors.append(kind + ": " + event.get("detail", event.get("code", "")))
                        break
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
        errors.append(f"{type(exc).__name__}: {exc}")


async def run_level(base_url: str, customers: int, messages: int) -> dict:
    results: list[dict] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(customer(base_url, i, messages, results, errors) for i in range(customers)))
    elapsed = time.perf_counter() - started
    engine_ttft = await asyncio.to_thread(engine_ttfts, [r["message_id"] for r in results])
    overhead = [r["first_ms"] - engine_ttft[r["message_id"]] for r in results if engine_ttft.get(r["message_id"]) is not None]
    first = [r["first_ms"] for r in results]
    done = [r["done_ms"] for r in results]
    return {
        "customers": customers,
        "answers": len(results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": elapsed,
        "first_p50_ms": percentile(first, 50),
        "first_p95_ms": percentile(first, 95),
        "first_p99_ms": percentile(first, 99),
        "done_p50_ms": percentile(done, 50),
        "done_p95_ms": percentile(done, 95),
        "done_p99_ms": percentile(done, 99),
        "path_overhead_p50_ms": percentile(overhead, 50),
        "path_overhead_p95_ms": percentile(overhead, 95),
    }


def engine_ttfts(message_ids: list[int]) -> dict[int, float | None]:
    from chatbot.conversations.models import Message

    return dict(Message.objects.filter(pk__in=message_ids).values_list("pk", "engine_time_to_first_token_ms"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--customers", default="1,8,32")
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup_django()
    rows = [asyncio.run(run_level(args.url.rstrip("/"), int(n), args.messages)) for n in args.customers.split(",")]
    if args.json:
        print(json.dumps({"url": args.url, "messages_per_customer": args.messages, "levels": rows}))
        return
    print_table(
        ["customers", "answers", "errors", "first p50", "p95", "p99", "done p50", "p95", "p99", "path overhead p50", "p95"],
        [
            [r["customers"], r["answers"], r["errors"], r["first_p50_ms"], r["first_p95_ms"], r["first_p99_ms"], r["done_p50_ms"], r["done_p95_ms"], r["done_p99_ms"], r["path_overhead_p50_ms"], r["path_overhead_p95_ms"]]
            for r in rows
        ],
    )
    print("(milliseconds; 'first' = send -> first streamed model output; overhead = that minus the engine's own time to first token)")
    for row in rows:
        for sample in row["error_samples"]:
            print(f"  error at {row['customers']} customers: {sample}")


if __name__ == "__main__":
    main()
