#!/usr/bin/env bash
# The web server as the product runs it (`make run`, `bench/path.sh`): uvicorn with the ASGI app,
# on 127.0.0.1:${PORT:-8000}. No per-message compression: the frames are small JSON events (a
# zlib context per socket costs memory and CPU for a few bytes; the path's p95 measured lower
# without, docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/uvicorn chatbot.asgi:application --host 127.0.0.1 --port "${PORT:-8000}" \
  --ws websockets-sansio --ws-per-message-deflate false --log-level warning
