"""The web server as `make run` starts it (`scripts/web.sh`): uvicorn's own frame limit is the
app's `WS_MAX_FRAME_BYTES`, and docker-compose's web command takes it from the same setting."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request

import pytest
import websockets
from django.conf import settings

from chatbot import settings as product_settings
from tests.conftest import ROOT, free_port, make_session, worker_env


def test_web_sh_and_compose_give_uvicorn_the_app_s_frame_limit():
    default = product_settings.WS_MAX_FRAME_BYTES
    web_sh = (ROOT / "scripts" / "web.sh").read_text()
    assert f'--ws-max-size "${{WS_MAX_FRAME_BYTES:-{default}}}"' in web_sh
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"WS_MAX_FRAME_BYTES: ${{WS_MAX_FRAME_BYTES:-{default}}}" in compose
    assert re.search(r"uvicorn chatbot\.asgi:application [^\"]*--ws-max-size \$\$WS_MAX_FRAME_BYTES", compose)


@pytest.mark.django_db(transaction=True)
def test_uvicorn_closes_a_frame_over_the_limit_with_1009_before_the_app_reads_it(tmp_path):
    limit = 1024
    cookie, _ = make_session()
    port = free_port()
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(
        ["scripts/web.sh"],
        cwd=ROOT,
        env=worker_env(PORT=str(port), WS_MAX_FRAME_BYTES=str(limit)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
                time.sleep(0.2)

        async def send(text: str) -> tuple[tuple[int, str] | None, str | None]:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/chat/",
                additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
            ) as socket:
                await socket.send(text)
                try:
                    reply = await asyncio.wait_for(socket.recv(), timeout=10)
                except websockets.ConnectionClosed as closed:
                    return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None, None
                return None, reply

        # Under the app's default limit, over uvicorn's (the setting): uvicorn closes it.
        assert limit < settings.WS_MAX_FRAME_BYTES
        (code, reason), _ = asyncio.run(send('{"type": "ping", "pad": "' + "\U0001f600" * (limit // 4 + 1) + '"}'))
        # The app's own close (the same code) gives no reason; the server's says its limit.
        assert code == 1009 and str(limit) in reason
        assert asyncio.run(send('{"type": "ping"}')) == (None, '{"type": "pong"}')
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
