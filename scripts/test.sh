#!/usr/bin/env bash
# One command for the tests: setup, services, lint, the whole suite (PostgreSQL, Redis, a real
# Celery worker, the real model, a real browser). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/services.sh postgres
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
