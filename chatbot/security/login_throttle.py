"""Login throttling, kept in Redis: at most LOGIN_MAX_FAILURES failed sign-ins per
LOGIN_FAILURE_WINDOW_S for one client address and for one user name, each a sliding window.

Every attempt is counted when it begins (a sorted set per address and per user name, scored by
time), so that attempts sent at once cannot all pass before the first failure is written; an
attempt that succeeds takes itself back out of its address's window and clears its own user
name's window, never another's. An attempt refused for the throttle is not counted. IPv6
addresses count per /64 network, the block one client usually holds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import time
from dataclasses import dataclass

from django.conf import settings

from chatbot.redis_client import get_redis

ADDRESS_KEY = "chatbot:login-attempts:address:{address}"
USERNAME_KEY = "chatbot:login-attempts:username:{digest}"


class LoginThrottled(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LoginAttempt:
    address_key: str
    username_key: str
    member: str


def _now() -> float:
    return time.time()


def _address_bucket(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def _username_digest(username: str) -> str:
    # Hashed: user names are arbitrary text of any length; case-folded as people type them.
    return hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


def login_attempt_begin(*, address: str, username: str) -> LoginAttempt:
    """Counts a sign-in attempt in both windows, or raises LoginThrottled (and counts nothing)
    when either window already holds LOGIN_MAX_FAILURES. One MULTI transaction per window
    change, so concurrent attempts are counted in order. Redis errors propagate."""
    window_s = settings.LOGIN_FAILURE_WINDOW_S
    limit = settings.LOGIN_MAX_FAILURES
    now = _now()
    attempt = LoginAttempt(
        address_key=ADDRESS_KEY.format(address=_address_bucket(address)),
        username_key=USERNAME_KEY.format(digest=_username_digest(username)),
        member=f"{now:.6f}:{secrets.token_hex(6)}",
    )
    keys = (attempt.address_key, attempt.username_key)
    pipe = get_redis().pipeline(transaction=True)
    for key in keys:
        pipe.zremrangebyscore(key, "-inf", now - window_s)
        pipe.zadd(key, {attempt.member: now})
        pipe.expire(key, math.ceil(window_s))
        pipe.zrange(key, 0, -1, withscores=True)
    replies = pipe.execute()
    windows = [replies[3], replies[7]]
    if all(len(window) <= limit for window in windows):
        return attempt
    pipe = get_redis().pipeline(transaction=True)
    for key in keys:
        pipe.zrem(key, attempt.member)
    pipe.execute()
    # Free again once enough of the failures before this attempt have left the window.
    retry_after_s = 0.0
    for window in windows:
        earlier = [score for member, score in window if member != attempt.member]
        if len(earlier) >= limit:
            retry_after_s = max(retry_after_s, earlier[len(earlier) - limit] + window_s - now)
    raise LoginThrottled(max(1, math.ceil(retry_after_s)))


def login_attempt_succeeded(*, attempt: LoginAttempt) -> None:
    """The attempt was a successful sign-in: it leaves its address's window (the failures of
    other user names from that address stay), and its user name's failures are cleared."""
    pipe = get_redis().pipeline(transaction=True)
    pipe.zrem(attempt.address_key, attempt.member)
    pipe.delete(attempt.username_key)
    pipe.execute()
