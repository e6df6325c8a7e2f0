"""The `Engine` interface (`engine/types.py`): both engines the worker may hold, the one in its
own process and the one in a child process, offer every member of it, called the same way."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from inference_worker.engine.engine import BatchingEngine
from inference_worker.engine.types import Engine
from inference_worker.engine_factory import EngineSpec
from inference_worker.engine_process import RemoteEngine

MEMBERS = {
    "variant",
    "tokenizer",
    "tokens_generated",
    "submit",
    "cancel",
    "stop",
    "running",
    "exited",
    "active_count",
    "waiting_count",
}
METHODS = ("submit", "cancel", "stop")


def protocol_members() -> set[str]:
    return {*Engine.__annotations__, *(name for name in vars(Engine) if not name.startswith("_"))}


def in_process() -> BatchingEngine:
    # Not started: the members exist from construction on.
    model = SimpleNamespace(generation_config=None)
    return BatchingEngine(model=model, tokenizer=None, variant="v", max_batch=1, max_new_tokens=1)


def in_child_process() -> RemoteEngine:
    return RemoteEngine(EngineSpec(variant="v", path="p", quantized=False))  # not started


def test_the_protocol_declares_what_the_worker_uses():
    assert protocol_members() == MEMBERS


@pytest.mark.parametrize("make", [in_process, in_child_process], ids=["BatchingEngine", "RemoteEngine"])
def test_both_engines_satisfy_the_protocol(make):
    engine = make()
    assert isinstance(engine, Engine)
    for name in MEMBERS:
        assert hasattr(engine, name), name
    for name in METHODS:
        declared = inspect.signature(getattr(Engine, name)).parameters.values()
        offered = inspect.signature(getattr(type(engine), name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in offered] == [(p.name, p.kind, p.default) for p in declared], name
