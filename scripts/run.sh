#!/usr/bin/env bash
# One command for the whole product on this machine: setup, Redis, database, demo model, a demo
# staff account, the worker and the web server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
scripts/services.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
PORT="${PORT:-8000}"
PY=.venv/bin/python
mkdir -p var/log

$PY manage.py migrate --no-input -v0
$PY manage.py build_demo_model
$PY manage.py ensure_demo_staff

$PY manage.py run_worker >var/log/worker.log 2>&1 &
worker=$!
trap 'kill $worker $web 2>/dev/null || true; wait 2>/dev/null' EXIT INT TERM
PORT="$PORT" scripts/web.sh &
web=$!
echo
echo "  Chat:  http://127.0.0.1:$PORT/"
echo "  Admin: http://127.0.0.1:$PORT/admin/   (see the demo staff account above)"
echo "  Worker log: var/log/worker.log"
echo
wait -n $worker $web
