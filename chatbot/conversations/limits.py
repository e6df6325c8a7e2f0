"""Limits per visitor and per address, kept in Redis so that every socket and every web process
counts together (docs/protocol.md, "Errors"; docs/settings.md, "Limits per visitor and address").

- messages a visitor sends in a minute, across all their sockets (a sliding window of the
  stored messages' ids), and the answers they have open at once, across conversations: both
  checked by one Lua script, one round trip, inside the transaction that stores the message
  (`visitor_message_admit`), so that a refused message is rolled back with its answer;
- sockets a visitor holds open (`visitor_socket_open` / `visitor_socket_close`);
- new visitor ids (chat sessions) an address is given in an hour (`address_new_visitor_admit`).

Each is a sorted set whose scores are times, trimmed as it is read, with a TTL so that an idle
visitor leaves nothing behind. `VISITOR_LIMITS=false` turns them all off. If Redis cannot be
reached the limits let everything through (and log it): they protect the workers, they must
not take the chat down with Redis.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chatbot.conversations.protocol import InvalidInput
from chatbot.desk.presence import PRESENCE_KEY, staff_watch_key
from chatbot.redis_client import get_redis

logger = logging.getLogger(__name__)

MESSAGE_WINDOW_S = 60
NEW_VISITOR_WINDOW_S = 3600
# A socket counts against its visitor for at most this long (an entry whose web process died
# without closing it lapses by itself; a socket held open longer stops counting).
SOCKET_LEASE_S = 3600

MESSAGES_KEY = "chatbot:limit:messages:{visitor}"
ANSWERS_KEY = "chatbot:limit:answers:{visitor}"
SOCKETS_KEY = "chatbot:limit:sockets:{visitor}"
NEW_VISITORS_KEY = "chatbot:limit:new-visitors:{address}"

ADMITTED, TOO_MANY_MESSAGES, TOO_MANY_ANSWERS = 0, 1, 2

# KEYS: the visitor's message window, their open answers, the conversation's staff-watch key, the
# desk's live sockets (chatbot/desk/presence.py).
# ARGV: now, window s, max messages, the message's member, the answer's member ("" for a message
# that starts no answer), its conversation's prefix, max open answers, an answer's lease s.
# An answer's member is "<conversation>:<generation>": a new answer in a conversation replaces
# the one it cancels, so it counts against the others only.
# Returns {outcome, a desk socket follows the conversation (0/1), any desk socket is live (0/1)}:
# the staff events of an admitted message go only where someone listens, in the same round trip.
_ADMIT_MESSAGE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {1, 0, 0} end
local answer = ARGV[5]
if answer ~= '' then
  local lease = tonumber(ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - lease)
  local prefix = ARGV[6]
  local others = 0
  local replaced = {}
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix then
      table.insert(replaced, member)
    else
      others = others + 1
    end
  end
  if others >= tonumber(ARGV[7]) then return {2, 0, 0} end
  for _, member in ipairs(replaced) do redis.call('ZREM', KEYS[2], member) end
  redis.call('ZADD', KEYS[2], now, answer)
  redis.call('EXPIRE', KEYS[2], math.ceil(lease))
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
local desk = redis.call('ZCOUNT', KEYS[4], now, '+inf') > 0 and 1 or 0
return {0, redis.call('EXISTS', KEYS[3]), desk}
"""

# KEYS: a sorted set scored by when its members lapse. ARGV: now, lapse, max, member, ttl.
# Admits the member (1) unless `max` others are live (0).
_ADMIT_LEASE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _now() -> float:
    return time.time()


def _script(source: str) -> Any:
    return _registered(get_redis(), source)


@functools.cache
def _registered(client: Any, source: str) -> Any:
    # redis-py sends EVALSHA, and the script itself only when Redis does not have it yet.
    return client.register_script(source)


def _fail_open(what: str) -> None:
    logger.warning("limits: could not %s in Redis; letting it through", what, exc_info=True)


def answer_member(*, conversation_public_id: str, generation_id: int) -> str:
    return f"{conversation_public_id}:{generation_id}"


@dataclass(frozen=True)
class Listeners:
    """Who listens for a customer's message besides the customer (read in the admit's round
    trip): a desk socket following the conversation, any desk socket at all. Both True when
    unknown (limits off, Redis away): an event then goes out rather than be lost."""

    watching: bool = True
    desk_open: bool = True


def visitor_message_admit(
    *, visitor_id: str, message_id: int, conversation_public_id: str, generation_id: int | None
) -> Listeners:
    """Count a customer's message against their limits, and the answer it starts (if any)
    against their open answers; raises InvalidInput (`rate_limited`, `too_many_answers`), and
    counts nothing, when one is reached. Call it inside the transaction that stores the message:
    a refusal rolls the message back. One Redis round trip, which also tells who listens."""
    if not settings.VISITOR_LIMITS:
        return Listeners()
    member = (
        ""
        if generation_id is None
        else answer_member(conversation_public_id=conversation_public_id, generation_id=generation_id)
    )
    try:
        outcome, watching, desk_open = _script(_ADMIT_MESSAGE)(
            keys=[
                MESSAGES_KEY.format(visitor=visitor_id),
                ANSWERS_KEY.format(visitor=visitor_id),
                staff_watch_key(conversation_public_id),
                PRESENCE_KEY,
            ],
            args=[
                _now(),
                MESSAGE_WINDOW_S,
                settings.VISITOR_MAX_MESSAGES_PER_MINUTE,
                message_id,
                member,
                f"{conversation_public_id}:",
                settings.VISITOR_MAX_OPEN_ANSWERS,
                settings.CELERY_VISIBILITY_TIMEOUT_S,
            ],
        )
    except Exception:  # noqa: BLE001 - Redis away: see the module's docstring
        _fail_open("count a message")
        return Listeners()
    if outcome == TOO_MANY_MESSAGES:
        raise InvalidInput(
            "rate_limited",
            f"You sent {settings.VISITOR_MAX_MESSAGES_PER_MINUTE} messages in the last minute; "
            "please wait a moment before sending more.",
        )
    if outcome == TOO_MANY_ANSWERS:
        raise InvalidInput(
            "too_many_answers",
            f"The assistant is already answering you in {settings.VISITOR_MAX_OPEN_ANSWERS} conversations; "
            "wait for an answer to finish (or stop one), then send this again.",
        )
    return Listeners(watching=bool(watching), desk_open=bool(desk_open))


def visitor_answer_end(*, visitor_id: str, conversation_public_id: str, generation_id: int) -> None:
    """An answer ended (done, failed, cancelled): it no longer counts as open."""
    if not settings.VISITOR_LIMITS:
        return
    try:
        get_redis().zrem(
            ANSWERS_KEY.format(visitor=visitor_id),
            answer_member(conversation_public_id=conversation_public_id, generation_id=generation_id),
        )
    except Exception:  # noqa: BLE001 - it lapses by itself
        _fail_open("end an answer")


def _lease_admit(*, key: str, member: str, limit: int, lease_s: float) -> bool:
    now = _now()
    try:
        return bool(_script(_ADMIT_LEASE)(keys=[key], args=[now, now + lease_s, limit, member, math.ceil(lease_s)]))
    except Exception:  # noqa: BLE001 - Redis away: see the module's docstring
        _fail_open(f"count {key.split(':')[2]}")
        return True


def visitor_socket_open(*, visitor_id: str, channel_name: str) -> bool:
    """A socket of this visitor opens: False (and nothing counted) when they hold
    VISITOR_MAX_SOCKETS open already."""
    if not settings.VISITOR_LIMITS:
        return True
    return _lease_admit(
        key=SOCKETS_KEY.format(visitor=visitor_id),
        member=channel_name,
        limit=settings.VISITOR_MAX_SOCKETS,
        lease_s=SOCKET_LEASE_S,
    )


def visitor_socket_close(*, visitor_id: str, channel_name: str) -> None:
    if not settings.VISITOR_LIMITS:
        return
    try:
        get_redis().zrem(SOCKETS_KEY.format(visitor=visitor_id), channel_name)
    except Exception:  # noqa: BLE001 - it lapses by itself
        _fail_open("close a socket")


def address_new_visitor_admit(*, address: str, visitor_id: str) -> bool:
    """A new chat session (visitor id) for this address: False (and nothing counted) when it was
    given ADDRESS_MAX_NEW_VISITORS_PER_HOUR in the last hour."""
    if not settings.VISITOR_LIMITS:
        return True
    # A sliding window: each entry lapses an hour after it was given.
    return _lease_admit(
        key=NEW_VISITORS_KEY.format(address=address),
        member=visitor_id,
        limit=settings.ADDRESS_MAX_NEW_VISITORS_PER_HOUR,
        lease_s=NEW_VISITOR_WINDOW_S,
    )


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for network in settings.TRUSTED_PROXIES:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(*, peer: str | None, forwarded_for: str | None = None) -> str:
    """The address a request comes from, as the limits count it: the ASGI scope's client (the
    server's peer), or, when that peer is one of TRUSTED_PROXIES, the nearest address in its
    `X-Forwarded-For` that is not a trusted proxy (a client can write anything to the left of
    what the proxies appended, so that is never read). An IPv6 address counts as its /64: one
    customer's machine commonly holds a whole /64."""
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return peer or "unknown"
    if forwarded_for and _trusted(address):
        for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                break  # a malformed hop: keep the last address a trusted proxy vouched for
            if not _trusted(address):
                break
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
