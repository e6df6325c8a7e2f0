"""A variant's batching engine in a process of its own (ENGINE_PROCESS, the default), and the
worker's side of it. Imports no Django.

Why a process of its own: a worker process runs the batch loop beside Celery's consumer, up to
WORKER_CONCURRENCY task threads, the stream pump, the publisher and the cancellation reader, and
Python runs one of them at a time. The batch loop's Python (a decode step is hundreds of small
torch calls) holds the interpreter lock for much of each step, so on the 2-core CPU a message's
hops through the worker (Celery's hand-over, the claim, the prompt) waited for it, and their
threads slowed the loop in turn (docs/benchmarks.md). On a GPU the step is launch-bound on the
CPU the same way. vLLM runs its engine core apart from its API server for the same reason.

`RemoteEngine` is an `Engine` (`engine.types`) like `BatchingEngine` (`submit` with a listener,
handles whose `generated` grows, `cancel`, the live counters): the engine runs in a child process
(`python -m inference_worker.engine_process FD`, `serve`), built there by
`engine_factory.build_engine`; requests go to it and tokens come back over one pipe, one message
per batch of events. A child that dies fails its requests (their generations end FAILED, the
customer's message stays saved) and the next request starts a new one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

from inference_worker.engine.engine import BatchingEngine
from inference_worker.engine.types import FINAL_KINDS, EngineEvent, Listener, RequestHandle
from inference_worker.engine_factory import EngineSpec, build_engine, load_tokenizer, settle_gc
from inference_worker.model_loading import ModelLoadError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# How long a child may take to load its model and report ready (a large checkpoint from disk).
READY_TIMEOUT_S = 900.0
# How long a cancelled request waits for the child's "cancelled" before it is ended here.
CANCEL_GRACE_S = 5.0
# Ended requests the child's outbox remembers, to drop their late events.
ENDED_KEPT = 4096
LOG_FORMAT = "%(asctime)s %(levelname)s engine-process[%(process)d] %(name)s: %(message)s"


# -- the worker's side ---------------------------------------------------------------------------
class RemoteEngine:
    """A `BatchingEngine` in a child process, driven over a pipe (see the module's docstring)."""

    def __init__(self, spec: EngineSpec, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.spec = spec
        self.variant = spec.variant
        self.ready_timeout_s = ready_timeout_s
        self.tokenizer: Any = None
        self.info: dict[str, Any] = {}
        self.active_count = 0
        self.waiting_count = 0
        self.tokens_generated = 0
        self._handles: dict[str, RequestHandle] = {}
        self._lock = threading.Lock()  # _handles
        # One writer on the pipe at a time. Not `_lock`: a sender blocked on a full pipe must not
        # hold up the reader, which keeps the child's side flowing (else each could wait on the other).
        self._send_lock = threading.Lock()
        self._ids = 0
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._ended = threading.Event()  # the child is gone (or was stopped)
        self._stopping = False

    def start(self) -> RemoteEngine:
        """Start the child and wait until its model is loaded. Raises ModelLoadError."""
        ours, theirs = Pipe()
        # The child finds this package wherever the worker was started from; it keeps the
        # worker's working directory, which relative model paths are relative to. A session of
        # its own: a Ctrl-C or SIGTERM meant for the worker does not reach it, so the worker's
        # warm shutdown lets the answers finish and then stops it (and if the worker dies, the
        # pipe closes and the child ends).
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "inference_worker.engine_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self._conn = ours
        try:
            info = self._handshake(ours)
            # The child's `load_variant` has checked the folder and loaded this tokenizer too.
            self.tokenizer = load_tokenizer(self.spec.path)
        except BaseException:  # a failed start leaves no child behind
            self._kill()
            ours.close()
            self._ended.set()
            raise
        self.info = info  # the child's device, precision (its GPTQ kernel) and backend
        logger.info("engine for %s ready in process %d: %s", self.variant, self._process.pid, info)
        self._reader = threading.Thread(target=self._read, name=f"engine-{self.variant}-reader", daemon=True)
        self._reader.start()
        return self

    def _handshake(self, conn: Connection) -> dict[str, Any]:
        """Send the spec, wait for "ready" (the child's info) or the load's error."""
        try:
            conn.send(asdict(self.spec))
        except OSError:  # the child is gone already (it could not start Python, say)
            code = self._process.wait()
            raise ModelLoadError(self.spec.path, f"engine process exited with code {code} while starting") from None
        if not conn.poll(self.ready_timeout_s):
            raise ModelLoadError(self.spec.path, f"engine process not ready in {self.ready_timeout_s:.0f} s")
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            code = self._process.wait()
            raise ModelLoadError(self.spec.path, f"engine process exited with code {code} while loading") from None
        if reply[0] == "error":
            raise ModelLoadError(reply[1], reply[2])
        return reply[1]

    @property
    def running(self) -> bool:
        return self._conn is not None and not self._ended.is_set()

    @property
    def exited(self) -> bool:
        """The child is gone (died or stopped): the worker starts a new engine for the next request."""
        return self._ended.is_set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int | None = None,
        request_id: str | None = None,
        listener: Listener | None = None,
        arrival: float | None = None,
        reasoning_budget: int | None = None,
    ) -> RequestHandle:
        with self._lock:
            # Checked under the lock that `_fail_all` takes after the child is found gone: a
            # request is either refused here or failed there, never left waiting.
            if not self.running:
                raise RuntimeError(f"engine for {self.variant} is not running")
            self._ids += 1
            request_id = request_id or f"r{self._ids}"
            handle = RequestHandle(
                request_id=request_id,
                prompt_ids=list(prompt_ids),
                max_new_tokens=max_new_tokens or self.spec.max_new_tokens,
                reasoning_budget=reasoning_budget,
                _engine=self,
                _listener=listener,
            )
            self._handles[request_id] = handle
        arrival = time.time() if arrival is None else arrival  # the worker's clock, not the child's turn
        self._send(("submit", request_id, handle.prompt_ids, handle.max_new_tokens, arrival, reasoning_budget))
        return handle

    def cancel(self, request_id: str) -> None:
        """Ask the child to take the request out of its queue or batch; the "cancelled" event
        comes back like any other (at once here when the child is gone)."""
        with self._lock:
            if request_id not in self._handles:
                return
        if self.running:
            self._send(("cancel", request_id))
            # If the child does not answer (wedged, say), the request ends here anyway, as an
            # in-process cancel would at once: its task must not wait past its time limit.
            timer = threading.Timer(CANCEL_GRACE_S, self._end_locally, (request_id, "cancelled", ""))
            timer.daemon = True
            timer.start()
        else:
            self._end_locally(request_id, "cancelled", "")

    def stop(self, timeout: float = 10.0) -> None:
        if self._conn is None:
            return
        self._stopping = True
        self._send(("stop",))
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        self._ended.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._fail_all("engine stopped")

    def _send(self, message: tuple) -> None:
        """A child that is gone is noticed by the reader, which fails its requests."""
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                pass

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    # -- the reader thread: the child's events onto the handles --------------------------------
    def _read(self) -> None:
        try:
            while True:
                _, records, counters = self._conn.recv()
                self.active_count, self.waiting_count, self.tokens_generated = counters
                for record in records:
                    self._apply(*record)
        except (EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a fault here must still fail the requests below
            logger.exception("engine %s: reading the engine process failed", self.variant)
        if not self._ended.is_set() and not self._stopping:
            self._ended.set()
            self._kill()
            code = self._process.returncode
            logger.error("engine process of %s exited (code %s); its requests fail", self.variant, code)
            self._fail_all(f"the engine process exited (code {code})")
        self.active_count = self.waiting_count = 0

    def _apply(self, request_id: str, kind: str, new_tokens: tuple, position: int | None, error: str, at: float):
        with self._lock:
            handle = self._handles.get(request_id)
            if handle is None:
                return
            if kind in FINAL_KINDS:
                del self._handles[request_id]
        if new_tokens:
            if handle.first_token_at is None:
                handle.first_token_at = at
            handle.generated = handle.generated + new_tokens
        if kind == "started":
            handle.admitted_at, handle.status = at, "running"
            handle._emit(EngineEvent("started"))
        elif kind == "queued":
            handle._emit(EngineEvent("queued", position=position))
        elif kind == "tokens":
            handle._emit(EngineEvent("tokens", tokens=handle.generated))
        elif kind in FINAL_KINDS:
            handle.status, handle.finished_at = kind, at
            handle._emit(EngineEvent(kind, tokens=handle.generated, error=error))

    def _end_locally(self, request_id: str, kind: str, error: str) -> None:
        self._apply(request_id, kind, (), None, error, time.perf_counter())

    def _fail_all(self, error: str) -> None:
        with self._lock:
            ids = list(self._handles)
        for request_id in ids:
            self._end_locally(request_id, "failed", error)


# -- the child's side ----------------------------------------------------------------------------
class _Outbox:
    """The engine's events, gathered as the listeners receive them and sent by the thread that
    produced them when it is done (`flush`: the batch loop after each step, the command loop
    after a submit or a cancel), many to a message, each request's tokens as what is new since
    its last message. No thread of its own: a hand-over would wait for the batch loop to let go
    of the interpreter lock, a delay on every first token."""

    def __init__(self, conn: Connection, engine: BatchingEngine) -> None:
        self._conn = conn
        self._engine = engine
        self._events: list[tuple[str, EngineEvent, float]] = []
        self._lock = threading.Lock()
        self._sent: dict[str, int] = {}
        # The latest requests to have had their final event (insertion-ordered, at most
        # ENDED_KEPT): a late event of theirs (a step's tokens emitted as a cancel ended the
        # request) is dropped, not counted in `_sent` again.
        self._ended: dict[str, None] = {}

    def listener(self, request_id: str) -> Listener:
        def on_event(event: EngineEvent) -> None:
            with self._lock:
                self._events.append((request_id, event, time.perf_counter()))

        return on_event

    def flush(self) -> None:
        with self._lock:
            if not self._events:
                return
            events, self._events = self._events, []
            records = []
            latest_tokens: dict[str, int] = {}  # request -> index of its "tokens" record
            for request_id, event, at in events:
                if request_id in self._ended:
                    continue
                sent = self._sent.get(request_id, 0)
                new = event.tokens[sent:] if len(event.tokens) > sent else ()
                if new:
                    self._sent[request_id] = len(event.tokens)
                if event.kind == "tokens" and request_id in latest_tokens:
                    # Two deliveries' tokens in one message: one record carries both.
                    index = latest_tokens[request_id]
                    old = records[index]
                    records[index] = (request_id, "tokens", old[2] + tuple(new), None, "", old[5])
                    continue
                if event.kind == "tokens":
                    latest_tokens[request_id] = len(records)
                if event.kind in FINAL_KINDS:
                    self._sent.pop(request_id, None)
                    latest_tokens.pop(request_id, None)
                    if len(self._ended) >= ENDED_KEPT:
                        del self._ended[next(iter(self._ended))]
                    self._ended[request_id] = None
                records.append((request_id, event.kind, tuple(new), event.position, event.error, at))
            engine = self._engine
            counters = (engine.active_count, engine.waiting_count, engine.tokens_generated)
            try:
                self._conn.send(("events", records, counters))
            except (OSError, ValueError):
                os._exit(0)  # the worker is gone


def serve(conn: Connection) -> None:
    """The child: build the engine from the spec the worker sends, report ready (or the load's
    error), then run the worker's commands until it says stop or goes away."""
    import torch

    torch.set_num_threads(1)  # the loop and the load set their own (torch_threads.py)
    spec = EngineSpec(**conn.recv())
    try:
        logging.getLogger().setLevel(spec.log_level)  # until now `__main__`'s default
        loaded, engine = build_engine(spec)
    except ModelLoadError as exc:
        conn.send(("error", exc.path, exc.problem))
        return
    except Exception as exc:  # noqa: BLE001 - reported to the worker, which names the variant
        conn.send(("error", spec.path, f"{type(exc).__name__}: {exc}"))
        return
    settle_gc()
    outbox = _Outbox(conn, engine)
    engine.after_outputs = outbox.flush
    # The command loop gets the interpreter from the batch loop sooner than Python's default
    # switch interval would let it.
    sys.setswitchinterval(0.001)
    conn.send(("ready", {"device": str(loaded.model.device), "precision": loaded.precision, "backend": engine.backend}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the worker is gone: so is this engine
        if message[0] == "stop":
            break
        try:
            if message[0] == "submit":
                _, request_id, prompt_ids, max_new_tokens, arrival, reasoning_budget = message
                listener = outbox.listener(request_id)
                try:
                    engine.submit(
                        prompt_ids,
                        max_new_tokens=max_new_tokens,
                        request_id=request_id,
                        listener=listener,
                        arrival=arrival,
                        reasoning_budget=reasoning_budget,
                    )
                except Exception as exc:  # noqa: BLE001 - that request fails; the others go on
                    logger.exception("engine %s: request %s refused", spec.variant, request_id)
                    listener(EngineEvent("failed", error=f"{type(exc).__name__}: {exc}"))
                    engine.cancel(request_id)  # frees its place if it was admitted
            elif message[0] == "cancel":
                engine.cancel(message[1])
        except Exception:  # noqa: BLE001 - one command's fault must not end every answer in the batch
            logger.exception("engine %s: command %s failed", spec.variant, message[0])
        outbox.flush()
    engine.stop(timeout=5)


if __name__ == "__main__":
    # INFO until the spec arrives with the worker's level (`serve`).
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # Signals meant for the worker's session do not reach this one (start_new_session), and a
    # SIGTERM or Ctrl-C sent here anyway is ignored: the worker ends this process (its "stop",
    # once its warm shutdown has let the answers finish, or its pipe closing if it dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = 1
    try:
        serve(Connection(int(sys.argv[1])))
        code = 0
    except BaseException:  # noqa: BLE001 - logged; the exit below must happen whatever it was
        logger.exception("engine process failed")
    finally:
        # Whatever happened: the batch loop's thread (transformers' is not a daemon) must not
        # keep this process, and the GPU memory it holds, alive.
        os._exit(code)
