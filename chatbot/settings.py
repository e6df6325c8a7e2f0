"""Django settings. Every tunable is read from the environment here, and only here.

Each setting has a documented default (see docs/settings.md); the defaults run the embedded demo:
an SQLite file, Redis on localhost and the demo model that `manage.py build_demo_model` builds.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chatbot.knowledge import text as _knowledge_text  # pure Python: the prompt's default instruction

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_number(name: str, default, cast, kind: str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name} must be {kind}, got {raw!r}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_optional_float(name: str) -> float | None:
    """A number, or None where the variable is unset or empty."""
    if os.environ.get(name, "").strip() == "":
        return None
    return env_float(name, 0.0)


def env_optional_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


# --- Django core -------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
# The demo's extras (`make run` turns it on): `manage.py ensure_demo_staff` creates a staff
# account only in this mode. Off by default, and in docker-compose unless asked for.
DEMO_MODE = env_bool("DEMO_MODE", False)
SECRET_KEY = env_str("SECRET_KEY", "")
# Secret keys published in this project's history, its compose file, Django's startproject and
# the usual placeholders: anyone can sign sessions with them.
KNOWN_SECRET_KEYS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "changethis",
        "insecure-demo-key-change-me-in-production",
        "secret",
        "secret-key",
        "secret_key",
        "your-secret-key",
        "your-secret-key-here",
        "django-insecure",
        "replace-me",
        "please-change-me",
        "xxx",
    }
)
if not DEBUG and (
    not SECRET_KEY.strip()
    or SECRET_KEY.strip().lower() in KNOWN_SECRET_KEYS
    or SECRET_KEY.startswith("django-insecure-")
):
    raise ImproperlyConfigured(
        "SECRET_KEY is empty or a published placeholder, and DEBUG is off: set SECRET_KEY to a long "
        "random string kept secret, e.g. the output of "
        "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'` "
        "(`make run` keeps one in var/secret_key; docs/deployment.md)."
    )
if not SECRET_KEY:
    # DEBUG only: a key for this process's own development pages.
    SECRET_KEY = "debug-only-" + os.urandom(32).hex()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://localhost:8000,http://127.0.0.1:8000")

VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'chatbot.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        # A pooled (or persistent) connection is checked before use, so that one broken by a
        # database restart is replaced instead of failing the query that takes it.
        conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded demo's SQLite file is written by the web and the worker's threads at once.
    # Transactions take the write lock when they begin (IMMEDIATE): one that read first and
    # wrote later failed at once with "database is locked" when another writer came between,
    # whatever the timeout (SQLite cannot wait there without a deadlock). In WAL mode readers
    # do not wait for the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        }
    )
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 20)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE > 0:
    # A pool per process (psycopg_pool), as Django advises under ASGI instead of persistent
    # connections: without it every socket frame and every generate task opened a new PostgreSQL
    # connection (a server process fork) on the way to the first token.
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ValueError("DATABASE_CONN_MAX_AGE must be 0 while DATABASE_POOL_MAX_SIZE is above 0")
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT_S", 10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chatbot.conversations",
    "chatbot.serving",
    "chatbot.desk",
    "chatbot.analytics",
    "chatbot.knowledge",
    "inference_worker",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatbot.security.csp.ContentSecurityPolicyMiddleware",
    "chatbot.security.nul.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatbot.urls"
ASGI_APPLICATION = "chatbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# The ASGI app serves /static/ itself (the embedded demo); turn off behind a proxy that does.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# Staff who log in at the desk's login page land on the desk.
LOGIN_URL = "/desk/login/"
LOGIN_REDIRECT_URL = "/desk/"

# Login throttling (admin and desk): this many failed sign-ins per window, for one client address
# and for one user name, each a sliding window kept in Redis (chatbot/security/login_throttle.py).
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_FAILURE_WINDOW_S = env_float("LOGIN_FAILURE_WINDOW_S", 300.0)

SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 60 * 60 * 24 * 30)
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True

# --- HTTPS ---------------------------------------------------------------------------------------
# One switch for a site served over HTTPS, with TLS ended by a proxy in front (docs/deployment.md):
# cookies only over HTTPS, HSTS, http:// redirected to https://, and the proxy's
# X-Forwarded-Proto header trusted to say a request came over HTTPS (the proxy must set it,
# replacing any that the client sent). Every page also carries a strict Content-Security-Policy,
# HTTPS or not (chatbot/security/csp.py).
HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
# The proxy's or orchestrator's health check may come over plain HTTP, without the header.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# --- Redis, Channels, Celery ---------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The Channels layer is Redis pub/sub: a group is a Redis channel that each web process holding a
# member subscribes to, and `group_send` is one PUBLISH that Redis pushes to those processes.
# channels-redis's list-based layer (`core.RedisChannelLayer`) took four Redis round trips per
# event to send and four more, one event at a time, to receive (docs/architecture.md).
# Both are at-most-once, which the protocol assumes: after a reconnect the page reloads history.
# Redis connections one process may open for publishing (redis-py's async pool stops at 100).
CHANNEL_LAYER_POOL_SIZE = env_int("CHANNEL_LAYER_POOL_SIZE", 1000)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chatbot.channel_layer.PubSubChannelLayer",  # channels-redis pub/sub, kept reading
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "max_connections": CHANNEL_LAYER_POOL_SIZE,
                    # A read that takes longer fails the layer's connection (redis-py 8's default
                    # is 5 s, which once killed idle sockets' consumers).
                    "socket_timeout": env_float("CHANNEL_LAYER_SOCKET_TIMEOUT_S", 30.0),
                }
            ],
            "prefix": env_str("CHANNEL_LAYER_PREFIX", "asgi"),
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
# Longest generation we allow; the broker's visibility timeout must stay above it, or an
# unacknowledged (acks_late) task would be handed to a second worker while the first still runs.
GENERATION_TIMEOUT_S = env_int("GENERATION_TIMEOUT_S", 180)
CELERY_VISIBILITY_TIMEOUT_S = env_int("CELERY_VISIBILITY_TIMEOUT_S", 2 * GENERATION_TIMEOUT_S + 60)
if CELERY_VISIBILITY_TIMEOUT_S <= GENERATION_TIMEOUT_S:
    raise ValueError("CELERY_VISIBILITY_TIMEOUT_S must be above GENERATION_TIMEOUT_S")
# How many times a generation whose worker died is run again before it is marked FAILED.
GENERATION_MAX_ATTEMPTS = env_int("GENERATION_MAX_ATTEMPTS", 2)

# --- Model variants ------------------------------------------------------------------------------
MODEL_DIR = Path(env_str("MODEL_DIR", str(VAR_DIR / "models")))
MODEL_VARIANTS = {
    "gptq-int4": {
        "path": env_str("MODEL_GPTQ_PATH", str(MODEL_DIR / "demo-gptq-int4")),
        "quantized": True,
    },
    "fp16": {
        "path": env_str("MODEL_FP16_PATH", str(MODEL_DIR / "demo-fp16")),
        "quantized": False,
    },
}
for _variant, _config in MODEL_VARIANTS.items():
    _prefix = "MODEL_" + _variant.upper().replace("-", "_")
    for _key in ("temperature", "top_p"):
        if (_value := env_optional_float(f"{_prefix}_{_key.upper()}")) is not None:
            _config[_key] = _value
    if (_budget := env_optional_int(f"{_prefix}_REASONING_BUDGET_TOKENS")) is not None:
        _config["reasoning_budget_tokens"] = _budget
DEFAULT_MODEL_VARIANT = env_str("DEFAULT_MODEL_VARIANT", "gptq-int4")
if DEFAULT_MODEL_VARIANT not in MODEL_VARIANTS:
    raise ValueError(f"DEFAULT_MODEL_VARIANT must be one of {sorted(MODEL_VARIANTS)}")
GPTQ_BITS = env_int("GPTQ_BITS", 4)
GPTQ_GROUP_SIZE = env_int("GPTQ_GROUP_SIZE", 32)
DEMO_MODEL_SEED = env_int("DEMO_MODEL_SEED", 1234)
# "cpu", "cuda" or "auto" (cuda when there is one).
MODEL_DEVICE = env_str("MODEL_DEVICE", "auto")
# What a GPTQ model computes in around its int4 layers on the CPU: "bfloat16", "float32", or
# "auto": bf16 where the CPU has bf16 arithmetic (AVX512_BF16, AMX), else fp32.
GPTQ_CPU_DTYPE = env_str("GPTQ_CPU_DTYPE", "auto")
if GPTQ_CPU_DTYPE not in ("auto", "bfloat16", "float32"):
    raise ValueError("GPTQ_CPU_DTYPE must be auto, bfloat16 or float32")
# On CUDA, the GPTQ kernel that serves the 4-bit variant (gptqmodel's backends): "triton" (needs
# only the Triton that PyTorch ships), "marlin", "exllama_v2", "machete" (CUDA extensions that
# gptqmodel builds with nvcc at their first use: Marlin took 6 minutes on an H200), "torch", or
# "auto" (gptqmodel's choice, which on an H200 without network fails: it picks Machete, whose
# build fetches CUTLASS's sources). docs/benchmarks.md has what each measured.
GPTQ_CUDA_KERNEL = env_str("GPTQ_CUDA_KERNEL", "triton")
if GPTQ_CUDA_KERNEL not in ("auto", "marlin", "exllama_v2", "machete", "triton", "torch"):
    raise ValueError("GPTQ_CUDA_KERNEL must be auto, marlin, exllama_v2, machete, triton or torch")

# Sampling: unset, each variant samples as its checkpoint's generation_config.json says (the real
# R1-Distill checkpoints: DeepSeek's 0.6 / 0.95; the demo model its own). Set, they override it
# for every variant; MODEL_<VARIANT>_TEMPERATURE / _TOP_P for one (0 temperature: greedy).
GENERATION_TEMPERATURE = env_optional_float("GENERATION_TEMPERATURE")
GENERATION_TOP_P = env_optional_float("GENERATION_TOP_P")
MAX_NEW_TOKENS = env_int("MAX_NEW_TOKENS", 256)
# Tokens a generation may spend inside <think> before the engine closes the reasoning itself and
# the model answers (the dense backend; unset: no budget). Per variant:
# MODEL_<VARIANT>_REASONING_BUDGET_TOKENS. The answer keeps what MAX_NEW_TOKENS leaves after it.
REASONING_BUDGET_TOKENS = env_optional_int("REASONING_BUDGET_TOKENS")
# The least of MAX_NEW_TOKENS a budget must leave to the answer.
REASONING_ANSWER_RESERVE_TOKENS = 32
for _name, _budget in [("REASONING_BUDGET_TOKENS", REASONING_BUDGET_TOKENS)] + [
    (f"MODEL_{_v.upper().replace('-', '_')}_REASONING_BUDGET_TOKENS", _c.get("reasoning_budget_tokens"))
    for _v, _c in MODEL_VARIANTS.items()
]:
    if _budget is not None and not 0 <= _budget <= MAX_NEW_TOKENS - REASONING_ANSWER_RESERVE_TOKENS:
        raise ValueError(
            f"{_name} must be between 0 and MAX_NEW_TOKENS - {REASONING_ANSWER_RESERVE_TOKENS} "
            f"({MAX_NEW_TOKENS - REASONING_ANSWER_RESERVE_TOKENS}), so that the answer keeps room"
        )
CONTEXT_BUDGET_TOKENS = env_int("CONTEXT_BUDGET_TOKENS", 768)
SYSTEM_PROMPT = env_str("SYSTEM_PROMPT", "")

# --- Worker ------------------------------------------------------------------------------------
# Variants this worker serves, and whether it loads them all at start or on first use.
WORKER_VARIANTS = env_list("WORKER_VARIANTS", "gptq-int4,fp16")
WORKER_PRELOAD = env_str("WORKER_PRELOAD", "all")  # "all" or "default"
# Requests one worker runs in one batch; beyond it they wait in order.
ENGINE_MAX_BATCH = env_int("ENGINE_MAX_BATCH", 32)
# Continuous batching backend: "dense" (ours), "paged" (transformers' paged KV cache) or "auto";
# the worker resolves and checks it (`inference_worker/engine/backends.py`).
ENGINE_BACKEND = env_str("ENGINE_BACKEND", "auto")
# On CUDA: the dense backend replays its decode steps from CUDA graphs (each graph checked
# against the eager pass when captured and at its next use), and the paged backend runs
# transformers' CUDA graphs and async batching (transformers leaves them off when attention
# takes a mask, as SDPA does).
ENGINE_CUDA_GRAPHS = env_bool("ENGINE_CUDA_GRAPHS", True)
# On CUDA: let PyTorch's attention use cuDNN. Off: with a mask PyTorch picks cuDNN on Hopper,
# which builds its plans per shape, and a decode step's key length is new every step, so the
# planning on the CPU outweighed the kernel (docs/benchmarks.md); the other kernels take over.
CUDA_SDPA_CUDNN = env_bool("CUDA_SDPA_CUDNN", False)
# Run each variant's engine in a process of its own (inference_worker/engine_process.py): the batch
# loop's Python then no longer takes turns with the worker's Celery, task and streaming threads.
ENGINE_PROCESS = env_bool("ENGINE_PROCESS", True)
# CPU threads for the batch loop's torch ops (0: one per CPU). The loops are the only threads of
# a worker that run torch on several cores (inference_worker/torch_threads.py); 1 suits a worker
# that shares its cores with the web, Redis and PostgreSQL, as on the 2-core machine.
ENGINE_LOOP_THREADS = env_int("ENGINE_LOOP_THREADS", 1)
# Dense backend: while the batch decodes, arrivals wait up to this long to be prefilled together.
ENGINE_PREFILL_WAIT_MS = env_float("ENGINE_PREFILL_WAIT_MS", 0.0)
# Generate tasks one worker process holds at once (threads); above ENGINE_MAX_BATCH they queue.
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 64)
# Seconds between streamed delta flushes to a conversation's group (coalescing).
STREAM_FLUSH_INTERVAL_S = env_float("STREAM_FLUSH_INTERVAL_S", 0.05)
WORKER_HEARTBEAT_S = env_float("WORKER_HEARTBEAT_S", 2.0)
WORKER_HEARTBEAT_TTL_S = env_float("WORKER_HEARTBEAT_TTL_S", 10.0)
# How long the web keeps sending messages to a worker that is loading a variant (they wait in
# its queue); a load that takes longer has the customers told that the assistant is unavailable.
WORKER_LOADING_GRACE_S = env_float("WORKER_LOADING_GRACE_S", 120.0)
METRICS_PORT = env_int("METRICS_PORT", 0)  # 0: metrics off; e.g. 9100 serves /metrics
# Log level of the engine processes (the worker's own follows LOG_LEVEL).
ENGINE_LOG_LEVEL = env_str("ENGINE_LOG_LEVEL", "INFO")
# CPU threads for the worker's torch work outside the batch loops: loading a model, the variant
# comparison (each on a thread of its own that ends with it). 0: one per CPU.
TORCH_THREADS = env_int("TORCH_THREADS", 0)

# --- Chat limits -------------------------------------------------------------------------------
MESSAGE_MAX_CHARS = env_int("MESSAGE_MAX_CHARS", 2000)
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 16384)
HISTORY_MAX_MESSAGES = env_int("HISTORY_MAX_MESSAGES", 200)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
WS_MAX_MESSAGES_PER_MINUTE = env_int("WS_MAX_MESSAGES_PER_MINUTE", 30)
WS_MAX_REFUSED_FRAMES = env_int("WS_MAX_REFUSED_FRAMES", 20)
STORE_NAME = env_str("STORE_NAME", "Northwind Goods")
# The demo's staff account (`manage.py ensure_demo_staff`, which `make run` calls; only with
# DEMO_MODE on). No password given: a random one, printed once when the account is created.
DEMO_STAFF_USERNAME = env_str("DEMO_STAFF_USERNAME", "admin")
DEMO_STAFF_PASSWORD = env_str("DEMO_STAFF_PASSWORD", "")
# Seconds a cached read of the active model variant stays fresh in a web process.
ACTIVE_VARIANT_CACHE_S = env_float("ACTIVE_VARIANT_CACHE_S", 2.0)
# --- Limits per visitor and per address (Redis, sliding windows: chatbot/conversations/limits.py) --
VISITOR_LIMITS = env_bool("VISITOR_LIMITS", True)
# Messages one visitor sends in a minute, across all their sockets.
VISITOR_MAX_MESSAGES_PER_MINUTE = env_int("VISITOR_MAX_MESSAGES_PER_MINUTE", 20)
# Answers one visitor has in progress at once, across their conversations.
VISITOR_MAX_OPEN_ANSWERS = env_int("VISITOR_MAX_OPEN_ANSWERS", 2)
# Chat sockets one visitor holds open at once (tabs).
VISITOR_MAX_SOCKETS = env_int("VISITOR_MAX_SOCKETS", 10)
# New chat sessions (visitor ids) one address is given in an hour.
ADDRESS_MAX_NEW_VISITORS_PER_HOUR = env_int("ADDRESS_MAX_NEW_VISITORS_PER_HOUR", 20)
# Proxies (addresses or networks) whose X-Forwarded-For names the client; empty: none.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")

# --- Agents' desk ----------------------------------------------------------------------------------
# Conversations one agent handles at once (their own setting at the desk overrides it).
DESK_AGENT_CAPACITY = env_int("DESK_AGENT_CAPACITY", 5)
# Hand each conversation that starts waiting to the online agent under capacity who was assigned
# one longest ago (round robin); off: it waits in the queue for an agent to take it.
DESK_AUTO_ASSIGN = env_bool("DESK_AUTO_ASSIGN", False)
# Told to customers waiting for a person when no agent is online.
SUPPORT_HOURS = env_str("SUPPORT_HOURS", "Monday to Friday 8:00-20:00 and Saturday 9:00-17:00 (CET)")
# A desk socket counts as present this long after its last sign of life (pages ping every 20 s).
DESK_PRESENCE_TTL_S = env_float("DESK_PRESENCE_TTL_S", 60.0)
# The desk's list of the bot's live conversations: those with a message in the last N minutes.
DESK_BOT_LIVE_MINUTES = env_int("DESK_BOT_LIVE_MINUTES", 30)
# Rows per desk list (waiting, mine, the bot's, recently resolved).
DESK_LIST_LIMIT = env_int("DESK_LIST_LIMIT", 50)

# --- Ratings ----------------------------------------------------------------------------------------
# The bot resolves a conversation it answered once the customer has said nothing for this long.
RESOLVE_AFTER_IDLE_MINUTES = env_int("RESOLVE_AFTER_IDLE_MINUTES", 30)
RATING_COMMENT_MAX_CHARS = env_int("RATING_COMMENT_MAX_CHARS", 1000)

# Recent customer questions the variant comparison runs besides the held-out set.
COMPARE_RECENT_QUESTIONS = env_int("COMPARE_RECENT_QUESTIONS", 50)
# The first N held-out questions and N held-out conversations the comparison runs (0: all of them;
# a quicker comparison for a large model on a busy worker).
COMPARE_HELDOUT_LIMIT = env_int("COMPARE_HELDOUT_LIMIT", 0)

# --- Gradual rollout and its guard (docs/rollback.md) -----------------------------------------------
# The live comparison counts a rollout's conversations that started in its last N hours.
ROLLOUT_WINDOW_HOURS = env_float("ROLLOUT_WINDOW_HOURS", 24.0)
# How often each worker's sweep runs the guard (every worker does; the row lock lets one act).
ROLLOUT_GUARD_INTERVAL_S = env_float("ROLLOUT_GUARD_INTERVAL_S", 15.0)
# Conversations each arm needs behind a rate before the guard tests it (ratings, for CSAT).
ROLLOUT_GUARD_MIN_CONVERSATIONS = env_int("ROLLOUT_GUARD_MIN_CONVERSATIONS", 200)
ROLLOUT_GUARD_MIN_RATINGS = env_int("ROLLOUT_GUARD_MIN_RATINGS", 50)
# One-sided significance level of each two-proportion test.
ROLLOUT_GUARD_ALPHA = env_float("ROLLOUT_GUARD_ALPHA", 0.01)
# How much worse (percentage points) the candidate must be on a signal for the guard to act.
ROLLOUT_GUARD_FAILURE_POINTS = env_float("ROLLOUT_GUARD_FAILURE_POINTS", 2.0)
ROLLOUT_GUARD_NO_ANSWER_POINTS = env_float("ROLLOUT_GUARD_NO_ANSWER_POINTS", 5.0)
ROLLOUT_GUARD_HANDOFF_POINTS = env_float("ROLLOUT_GUARD_HANDOFF_POINTS", 5.0)
ROLLOUT_GUARD_CSAT_POINTS = env_float("ROLLOUT_GUARD_CSAT_POINTS", 10.0)

# --- Knowledge base (docs/knowledge.md) -------------------------------------------------------------
# Passages of the help center given to the model with a customer's question, at most.
KNOWLEDGE_MAX_PASSAGES = env_int("KNOWLEDGE_MAX_PASSAGES", 3)
# The relevance cut-off (0..1: the idf-weighted share of the question's known terms a passage
# holds, chatbot/knowledge/text.py); below it a passage is not given, and with none the bot says
# it does not know.
KNOWLEDGE_MIN_RELEVANCE = env_float("KNOWLEDGE_MIN_RELEVANCE", 0.35)
# Longest article body staff may save (characters).
KNOWLEDGE_ARTICLE_MAX_CHARS = env_int("KNOWLEDGE_ARTICLE_MAX_CHARS", 20000)
# The instruction after the passages in the prompt (the demo model is trained on the default).
KNOWLEDGE_INSTRUCTION = env_str("KNOWLEDGE_INSTRUCTION", _knowledge_text.DEFAULT_INSTRUCTION)
# The answer check (inference_worker/grounding.py): a grounded answer about the store must be what
# one of its passages says (at least KNOWLEDGE_MIN_SUPPORT of its words, every figure); else the
# passage's own text replaces it, or, with no passage saying it, "I couldn't find that" and a person.
KNOWLEDGE_ANSWER_CHECK = env_bool("KNOWLEDGE_ANSWER_CHECK", True)
KNOWLEDGE_MIN_SUPPORT = env_float("KNOWLEDGE_MIN_SUPPORT", 0.6)
