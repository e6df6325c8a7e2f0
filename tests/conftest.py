"""Shared fixtures: a clean Redis database, sessions for customer sockets, the test model (built
once by the project's own build code) and a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from chatbot.redis_client import get_redis
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_read

ROOT = Path(__file__).resolve().parent.parent

# Logs of the processes the tests start (workers, the web server): a failing test that used them
# gets their last lines in its report, so a failure on CI can be read without the machine.
PROCESS_LOGS: dict[str, Path] = {}
LOG_TAIL_LINES = 150


@pytest.fixture(autouse=True, scope="session")
def _redis_clean() -> None:
    get_redis().flushdb()


# PostgreSQL's code for a transaction it ended to break a deadlock.
DEADLOCK_DETECTED = "40P01"
FLUSH_ATTEMPTS = 5


def _flush_retrying_deadlocks() -> None:
    """pytest-django empties the database after each transactional test with one TRUNCATE of every
    table, which takes each table's exclusive lock in turn. The live worker's sweep (every
    WORKER_HEARTBEAT_S: idle conversations resolved, orphaned answers requeued) locks rows of
    several tables in transactions of its own, so the two can deadlock, and PostgreSQL then ends
    the TRUNCATE: on CI once, "Database test_chatbot couldn't be flushed" after the analytics
    test, whose 400 seeded conversations the sweep was resolving. The flush is tried again, as an
    application retries a transaction that lost a deadlock (tests/test_flush.py makes one)."""
    from django.db import OperationalError
    from django.db.backends.postgresql.operations import DatabaseOperations

    if getattr(DatabaseOperations.execute_sql_flush, "retries_deadlocks", False):
        return
    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return original(self, sql_list)
            except OperationalError as error:
                if getattr(error.__cause__, "sqlstate", None) != DEADLOCK_DETECTED or attempt == FLUSH_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)

    execute_sql_flush.retries_deadlocks = True
    DatabaseOperations.execute_sql_flush = execute_sql_flush


_flush_retrying_deadlocks()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """pytest-django's, with the test database's other sessions ended before it is dropped: the
    connection pool's idle connections, and those that threads of the tests' sockets still hold,
    would keep PostgreSQL from dropping it (a warning at the end of every run)."""
    yield
    from django.db import connections

    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        if connection.alias in getattr(type(connection), "_connection_pools", {}):
            connection.close_pool()
        connection.close()
        with connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [connection.settings_dict["NAME"]],
            )


@pytest.fixture(autouse=True)
def _visitor_limits_clear() -> None:
    """Each test starts with no visitor or address counted (`chatbot.conversations.limits`): the
    tests reuse visitor ids and all come from one address."""
    client = get_redis()
    keys = list(client.scan_iter("chatbot:limit:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _variant_cache_clear() -> None:
    from chatbot.serving.selectors import active_variant_cache_clear

    active_variant_cache_clear()


@pytest.fixture
def redis_client():
    return get_redis()


@pytest.fixture(scope="session")
def test_models() -> dict[str, str]:
    """The demo model's small preset (about 20 s to build), built once into MODEL_DIR and reused."""
    from inference_worker.demo_model.build import build_demo_model

    paths = {variant: config["path"] for variant, config in settings.MODEL_VARIANTS.items()}
    build_demo_model(
        model_dir=Path(settings.MODEL_DIR),
        fp16_dir=Path(paths["fp16"]),
        gptq_dir=Path(paths["gptq-int4"]),
        force=False,
        preset="small",
        seed=settings.DEMO_MODEL_SEED,
        bits=settings.GPTQ_BITS,
        group_size=settings.GPTQ_GROUP_SIZE,
        log=lambda line: None,
    )
    return paths


def make_session() -> tuple[str, str]:
    """A saved session with a visitor id, as the chat page gives it: (cookie header, visitor id)."""
    from django.contrib.sessions.backends.db import SessionStore

    from chatbot.conversations.services.customer import visitor_id_ensure

    session = SessionStore()
    visitor_id = visitor_id_ensure(session=session)
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", visitor_id


def worker_env(**extra: str) -> dict[str, str]:
    from django.db import connection

    env = dict(os.environ)
    db = settings.DATABASES["default"]
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{connection.settings_dict['NAME']}",
            "PYTHONUNBUFFERED": "1",
            "TORCH_THREADS": "1",
        }
    )
    env.update(extra)
    return env


def settings_refusal(**extra: str) -> str:
    """Django's setup in a process of its own with these settings in its environment, which must
    refuse them: what it wrote to stderr (the refusal's message)."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=worker_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, "the settings were accepted"
    return result.stderr


def wait_for_worker(name: str, *, timeout: float = 90, process: subprocess.Popen | None = None) -> WorkerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = heartbeat_read(name)
        if status is not None:
            return status
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"worker {name} exited with {process.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"worker {name} sent no heartbeat in {timeout} s")


class WorkerProcess:
    def __init__(self, name: str, log_path: Path, **env: str) -> None:
        self.name = name
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log = self.log_path.open("a")  # a restart keeps what the process wrote before
        PROCESS_LOGS[f"worker {self.name}"] = self.log_path
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "--name", self.name, "--concurrency", "16"],
            cwd=ROOT,
            env=worker_env(**self.env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_worker(self.name, process=self.process)
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if kill:
            heartbeat_delete(self.name)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()

    def engine_processes(self) -> list[int]:
        """The worker's engine processes (`python -m inference_worker.engine_process`), by pid. A
        killed one leaves this list as soon as it starts to exit (its command line is gone), which
        can be before the worker has seen it go."""
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "-f", "inference_worker.engine_process"],
            capture_output=True,
            text=True,
        ).stdout.split()
        return [int(pid) for pid in children]


@pytest.fixture(scope="session")
def live_worker(test_models, django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A real `manage.py run_worker` process on the test database, the real broker and the test
    model, shared by the integration tests."""
    worker = WorkerProcess("test-worker", tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


def pytest_collection_modifyitems(config, items) -> None:
    """Run the tests that start workers and browsers last: the tests before them rely on no
    worker being alive (the 'assistant unavailable' paths)."""

    def weight(item) -> int:
        if item.get_closest_marker("browser"):
            return 2
        if item.get_closest_marker("integration"):
            return 1
        return 0

    items.sort(key=weight)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, path in PROCESS_LOGS.items():
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        report.sections.append(
            (f"{name} log (last {LOG_TAIL_LINES} lines of {path})", "\n".join(lines[-LOG_TAIL_LINES:]))
        )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_url(live_worker, web_server_url) -> str:
    """The real ASGI app under uvicorn, on the test database, the real Redis and the live worker."""
    return web_server_url


@pytest.fixture(scope="session")
def web_server_url(django_db_setup, tmp_path_factory) -> Iterator[str]:
    """The real ASGI app under uvicorn, on the test database and the real Redis; no worker (tests
    that draw stored conversations need no model)."""
    import urllib.request

    port = free_port()
    log_path = tmp_path_factory.mktemp("web") / "web.log"
    log = log_path.open("w")
    PROCESS_LOGS["web server"] = log_path
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "chatbot.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "false",
            "--ws-max-size",
            str(settings.WS_MAX_FRAME_BYTES),
        ],
        cwd=ROOT,
        env=worker_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web server did not start; see {log.name}") from None
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
    # the (synchronous, harmless here) database work of the test fixtures.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()
