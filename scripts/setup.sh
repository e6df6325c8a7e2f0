#!/usr/bin/env bash
# Sets up everything the project needs on this machine, idempotently:
#   scripts/setup.sh run    the product (virtual environment, requirements)
#   scripts/setup.sh test   the tests too (dev requirements, Debian's chromium for browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi

req=requirements.txt
[ "$mode" = test ] && req=requirements-dev.txt
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)-$mode"
if [ ! -f "$stamp" ]; then
  echo "==> installing $req (torch 2.13.0 CPU build from local disk where pip finds it)"
  if ! .venv/bin/pip install -q -r "$req" >.venv/pip.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip.log | tail -30 >&2
    echo "setup: pip could not install $req (log: .venv/pip.log)" >&2
    exit 1
  fi
  .venv/bin/python -c "import torch, transformers, gptqmodel, django, channels, celery" \
    || { echo "setup: the requirements did not install; see the pip output above" >&2; exit 1; }
  touch "$stamp"
fi

if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian's chromium for the browser tests"
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "setup: browser tests need /usr/bin/chromium: run 'sudo apt-get install chromium'" >&2
    exit 1
  fi
fi
