"""Live worker metrics for Prometheus (served on METRICS_PORT when it is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RUNNING = Gauge("chatbot_engine_running_requests", "Requests in the running batch", ["variant"])
WAITING = Gauge("chatbot_engine_waiting_requests", "Requests waiting for a place in the batch", ["variant"])
TOKENS = Counter("chatbot_generated_tokens", "Tokens generated", ["variant"])
TOKENS_PER_S = Gauge("chatbot_engine_tokens_per_second", "Tokens per second over the last heartbeat", ["variant"])
TTFT = Histogram(
    "chatbot_time_to_first_token_seconds",
    "From the customer's message to the first generated token",
    ["variant"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TIME_TO_ANSWER = Histogram(
    "chatbot_time_to_first_answer_token_seconds",
    "From the customer's message to the first token of the answer, after the reasoning",
    ["variant"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
REASONING_CUT = Counter("chatbot_reasoning_cut", "Answers whose reasoning the engine closed at its budget", ["variant"])
QUEUE_WAIT = Histogram(
    "chatbot_queue_wait_seconds",
    "From the customer's message to a place in the batch",
    ["variant"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
GENERATIONS = Counter("chatbot_generations", "Generations ended, by outcome", ["variant", "outcome"])
# The rollout guard (docs/rollback.md). Every worker sets the gauges from the database at each
# check, so any worker's figure is the product's: alert on max(chatbot_rollout_guard_tripped) > 0.
GUARD_TRIPPED = Gauge(
    "chatbot_rollout_guard_tripped",
    "1 while a rollout rolled back by the guard has not been acknowledged by staff",
)
GUARD_ROLLBACKS = Counter("chatbot_rollout_guard_rollbacks", "Rollouts this worker's guard rolled back", ["candidate"])
GUARD_ENABLED = Gauge("chatbot_rollout_guard_enabled", "1 while the rollout guard is on")
CANDIDATE_SHARE = Gauge(
    "chatbot_rollout_candidate_share_percent", "Share of new conversations starting on the rollout's candidate"
)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
