"""Test settings: the same settings module, with the environment pointed at PostgreSQL, a Redis
database of its own, and the test model that the suite builds (tests/conftest.py)."""

import os
import sys
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatbot")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "chatbot-test")
os.environ.setdefault("MODEL_DIR", str(_root / "var" / "test-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A key of the tests' own (the product refuses an empty or published one with DEBUG off).
os.environ.setdefault("SECRET_KEY", "tests-only-8c1f2b7e0d9a4c6f9e3b5a7d1c0e2f4a6b8d0c2e4f6a8b0d")
os.environ.setdefault("WORKER_HEARTBEAT_S", "0.5")
os.environ.setdefault("WORKER_HEARTBEAT_TTL_S", "3")
os.environ.setdefault("MAX_NEW_TOKENS", "96")
# The prompt budget the demo model gets with the product's defaults (640 - 256 = 384 tokens: 192
# for the conversation, up to 192 for the help center's passages), which MAX_NEW_TOKENS 96 would
# otherwise widen to 544 (generation: prompt_budget).
os.environ.setdefault("CONTEXT_BUDGET_TOKENS", "384")
os.environ.setdefault("ACTIVE_VARIANT_CACHE_S", "0")
# The rollback page's comparison on the live worker: 16 held-out questions and conversations (all
# of them took two minutes of the suite; evaluate_models' own tests run the whole sets' code).
os.environ.setdefault("COMPARE_HELDOUT_LIMIT", "16")
# The shared live worker's rollout guard stays quiet: its queries every few seconds could meet
# pytest-django's flush (TRUNCATE of every table) between tests in a deadlock. The guard drill
# starts a worker of its own with a short interval.
os.environ.setdefault("ROLLOUT_GUARD_INTERVAL_S", "3600")
# Every page the browser tests load comes from 127.0.0.1 (tests/test_limits.py sets its own).
os.environ.setdefault("ADDRESS_MAX_NEW_VISITORS_PER_HOUR", "100000")

from chatbot.settings import *  # noqa: E402,F403

# Django's test client asks for the host `testserver`, which the product does not serve.
if "testserver" not in ALLOWED_HOSTS:  # noqa: F405
    ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]  # noqa: F405

if "pytest" in sys.modules:
    # The test process itself opens plain connections: its test code calls the ORM from
    # short-lived threads that never give their connection back, which would drain a pool. The
    # worker and web processes that the suite starts load these settings without pytest, and
    # keep the pool, as deployed.
    DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
