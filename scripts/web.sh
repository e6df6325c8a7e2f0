#!/usr/bin/env bash
# The web server as the product runs it (`make run`, `bench/path.sh`): uvicorn with the ASGI app,
# on 127.0.0.1:${PORT:-8000}. No per-message compression: the frames are small JSON events (a
# zlib context per socket costs memory and CPU for a few bytes; the path's p95 measured lower
# without, docs/benchmarks.md). uvicorn's own frame limit is the app's, WS_MAX_FRAME_BYTES (the
# same default as chatbot/settings.py): a larger frame is closed with 1009 before it is read whole.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/uvicorn chatbot.asgi:application --host 127.0.0.1 --port "${PORT:-8000}" \
  --ws websockets-sansio --ws-per-message-deflate false --ws-max-size "${WS_MAX_FRAME_BYTES:-16384}" \
  --log-level warning
