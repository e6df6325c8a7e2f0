"""Which batching backend ENGINE_BACKEND names (pure logic)."""

import pytest

from inference_worker.engine.backends import resolve_backend
from inference_worker.engine_factory import EngineSpec


def test_auto_backend_is_dense_and_paged_only_when_asked():
    assert resolve_backend("auto") == "dense"
    assert resolve_backend("dense") == "dense"
    assert resolve_backend("paged") == "paged"


def test_a_spec_left_at_its_default_runs_the_dense_backend():
    assert resolve_backend(EngineSpec(variant="v", path="p", quantized=False).backend) == "dense"


def test_an_unknown_backend_is_refused_naming_it():
    with pytest.raises(ValueError, match="unknown engine backend 'flash': 'auto', 'dense' or 'paged'"):
        resolve_backend("flash")
