#!/usr/bin/env bash
# The whole path's benchmark, as docs/benchmarks.md measures it: a fresh web server (`scripts/web.sh`, as
# `make run` starts it), worker (and its engine processes), PostgreSQL database and Redis database
# for each run, a warm-up that is not measured, then `bench/load.py` with your arguments.
#
#   bench/path.sh --customers 1,32 --messages 3             # all customers arrive at once
#   bench/path.sh --customers 1,32 --messages 3 --ramp 1    # arrivals spread over a second
#   ENGINE_PROCESS=false bench/path.sh --customers 32       # any setting, for an A/B
#   BENCH_SCRIPT=bench/desk.py bench/path.sh --busy 32      # another benchmark on the same fresh setup
#
# Environment: BENCH_DATABASE (default chatbot_bench, dropped and created on 127.0.0.1 as
# postgres), BENCH_REDIS_DB (default 3, flushed), BENCH_PORT (default 8020), BENCH_LOGS (where the
# web and worker logs go, default var/log/bench), BENCH_WARMUP (warm-up customers, default 4);
# MODEL_DIR and the other settings pass through. Uses the demo model (`make run` or
# `manage.py build_demo_model` builds it). Run nothing else meanwhile: every process shares the
# machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DB="${BENCH_DATABASE:-chatbot_bench}"
PORT="${BENCH_PORT:-8020}"
LOGS="${BENCH_LOGS:-var/log/bench}"
WORKER_NAME="bench-$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export REDIS_URL="redis://127.0.0.1:6379/${BENCH_REDIS_DB:-3}"
export CELERY_BROKER_URL="$REDIS_URL"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
SECRET_KEY="${SECRET_KEY:-$(scripts/secret_key.sh)}"
export SECRET_KEY
mkdir -p "$LOGS"

worker= web=
stop() {
  # The worker's warm shutdown ends its engine processes (they also end when its pipe closes).
  [ -n "$web" ] && kill "$web" 2>/dev/null || true
  [ -n "$worker" ] && kill "$worker" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$worker" 2>/dev/null || kill -0 "$web" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$web" ] && kill -9 "$web" 2>/dev/null || true
  [ -n "$worker" ] && kill -9 "$worker" 2>/dev/null || true
}
trap stop EXIT INT TERM

dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"
createdb -h 127.0.0.1 -U postgres "$DB"
redis-cli -u "$REDIS_URL" flushdb >/dev/null
$PY manage.py migrate -v0

$PY manage.py run_worker --name "$WORKER_NAME" >"$LOGS/worker.log" 2>&1 &
worker=$!
PORT="$PORT" scripts/web.sh >"$LOGS/web.log" 2>&1 &
web=$!
# Celery's own "ready" line comes once every variant's engine is loaded and the queues are consumed.
for _ in $(seq 300); do
  grep -q "gpu@$WORKER_NAME ready" "$LOGS/worker.log" && break
  kill -0 "$worker" 2>/dev/null || { echo "the worker stopped; see $LOGS/worker.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "gpu@$WORKER_NAME ready" "$LOGS/worker.log" || { echo "the worker was not ready in 150 s" >&2; exit 1; }

$PY bench/load.py --url "http://127.0.0.1:$PORT" --warmup "${BENCH_WARMUP:-4}" --customers 1 --messages 1 >/dev/null
if [ -n "${BENCH_SCRIPT:-}" ]; then
  $PY "$BENCH_SCRIPT" --url "http://127.0.0.1:$PORT" "$@"
else
  $PY bench/load.py --url "http://127.0.0.1:$PORT" --warmup 0 "$@"
fi
