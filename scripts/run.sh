#!/usr/bin/env bash
# One command for the whole product on this machine: setup, Redis, database, demo model, a demo
# staff account, the worker and the web server. Demo mode (DEMO_MODE=1): the staff account with a
# random password, printed once. A worker that dies is started again (scripts/supervise.sh) and
# the web server stays up; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
scripts/services.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export DEMO_MODE="${DEMO_MODE:-1}"
# The demo's own secret, made once and kept in var/secret_key, unless SECRET_KEY is set.
SECRET_KEY="${SECRET_KEY:-$(scripts/secret_key.sh)}"
export SECRET_KEY
PORT="${PORT:-8000}"
PY=.venv/bin/python
mkdir -p var/log

$PY manage.py migrate --no-input -v0
# The demo's help-center articles, once, into an empty knowledge base (staff edit them in the admin).
$PY manage.py import_articles chatbot/knowledge/demo_articles --if-empty
$PY manage.py build_demo_model
$PY manage.py ensure_demo_staff
if [ -n "${SEED_DEMO_HISTORY:-}" ] && [ "$($PY manage.py shell -c 'from chatbot.conversations.models import Conversation; print(Conversation.objects.exists())')" = False ]; then
  # Realistic history for the analytics page, once, on an empty database.
  $PY manage.py seed_demo_history --conversations "$SEED_DEMO_HISTORY"
fi

: >var/log/worker.log
scripts/supervise.sh worker var/log/worker.log -- $PY manage.py run_worker &
worker=$!
trap 'kill $worker $web 2>/dev/null || true; wait 2>/dev/null' EXIT INT TERM
PORT="$PORT" scripts/web.sh &
web=$!
echo
echo "  Chat:  http://127.0.0.1:$PORT/"
echo "  Desk:  http://127.0.0.1:$PORT/desk/    (the demo staff account above)"
echo "  Analytics: http://127.0.0.1:$PORT/analytics/   (SEED_DEMO_HISTORY=2000 make run fills an empty demo with history)"
echo "  Admin: http://127.0.0.1:$PORT/admin/   (the demo staff account above)"
echo "  Worker log: var/log/worker.log (restarted if it dies)"
echo
# The web server's end ends the run; the worker's supervisor only ends when stopped.
wait -n $worker $web
