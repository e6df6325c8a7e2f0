"""The engine's request state, admission, streaming and batching logic import neither torch nor
transformers: they are unit-tested without a model, and the worker's streaming side uses them.
Each module is imported in a fresh interpreter, where nothing else has loaded those libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_FREE = [
    "inference_worker.engine.types",
    "inference_worker.engine.backends",
    "inference_worker.engine.admission",
    "inference_worker.engine.stream",
    "inference_worker.engine.pump",
    "inference_worker.engine.dense",
]
REPORT = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps({name: name in sys.modules for name in ("torch", "transformers")}))
"""


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_no_torch_and_no_transformers(module):
    result = subprocess.run(
        [sys.executable, "-c", REPORT, module], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == {"torch": False, "transformers": False}
