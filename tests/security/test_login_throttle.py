"""Login throttling on the admin's and the desk's login pages: 5 failed sign-ins per 5 minutes
for one address and for one user name (sliding windows in Redis), a clear message, and a
success that clears only its own user name's failures."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from chatbot.redis_client import get_redis
from chatbot.security import login_throttle

pytestmark = pytest.mark.django_db

PASSWORD = "right-password-1"
DESK_LOGIN = "/desk/login/"
ADMIN_LOGIN = "/admin/login/"
THROTTLED = "Too many failed sign-ins"


@pytest.fixture(autouse=True)
def _throttle_clean(settings):
    settings.LOGIN_MAX_FAILURES = 5
    settings.LOGIN_FAILURE_WINDOW_S = 300.0
    redis = get_redis()
    for key in redis.scan_iter("chatbot:login-attempts:*"):
        redis.delete(key)


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(login_throttle, "_now", lambda: now[0])
    return now


def make_staff(username: str, *, superuser: bool = False):
    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(username=username, email="", password=PASSWORD)
    return model.objects.create_user(username=username, password=PASSWORD, is_staff=True)


def sign_in(client, url: str, username: str, password: str, address: str):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.wsgi_request.session


@pytest.mark.parametrize("url", [DESK_LOGIN, ADMIN_LOGIN])
def test_five_failures_pause_sign_in_even_with_the_right_password_until_the_window_moves(client, clock, url):
    make_staff("kim", superuser=True)
    for _ in range(5):
        response = sign_in(client, url, "kim", "wrong", "10.0.0.1")
        assert response.status_code == 200 and THROTTLED not in response.text
        clock[0] += 10
    refused = sign_in(client, url, "kim", PASSWORD, "10.0.0.1")
    assert refused.status_code == 200 and not signed_in(refused)
    assert THROTTLED in refused.text and "try again in 5 minutes" in refused.text
    # The refused attempt was not counted: once the first failure is 5 minutes old, one more try.
    clock[0] = 1_000_000.0 + 300 + 1
    assert signed_in(sign_in(client, url, "kim", PASSWORD, "10.0.0.1"))


def test_a_user_name_is_throttled_across_addresses(client, clock):
    make_staff("kim")
    for number in range(5):
        sign_in(client, DESK_LOGIN, "kim", "wrong", f"10.0.1.{number}")
    refused = sign_in(client, DESK_LOGIN, "KIM ", PASSWORD, "10.0.2.1")
    assert THROTTLED in refused.text and not signed_in(refused)
    # Another user name from those addresses is not held up by it.
    make_staff("lee")
    assert signed_in(sign_in(client, DESK_LOGIN, "lee", PASSWORD, "10.0.1.0"))


def test_an_address_is_throttled_across_user_names(client, clock):
    make_staff("kim")
    for number in range(5):
        sign_in(client, DESK_LOGIN, f"guess{number}", "wrong", "10.0.3.1")
    refused = sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.3.1")
    assert THROTTLED in refused.text and not signed_in(refused)
    assert signed_in(sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.3.2"))


def test_ipv6_addresses_count_per_64_network(client, clock):
    make_staff("kim")
    for number in range(5):
        sign_in(client, DESK_LOGIN, f"guess{number}", "wrong", f"2001:db8:1:2::{number + 1}")
    refused = sign_in(client, DESK_LOGIN, "kim", PASSWORD, "2001:db8:1:2:ffff::9")
    assert THROTTLED in refused.text


def test_a_success_does_not_clear_another_user_name_s_failures_or_the_address_s(client, clock):
    make_staff("kim")
    make_staff("mallory")
    for _ in range(4):
        sign_in(client, DESK_LOGIN, "kim", "wrong", "10.0.4.1")
    assert signed_in(sign_in(client, DESK_LOGIN, "mallory", PASSWORD, "10.0.4.1"))
    client.logout()
    sign_in(client, DESK_LOGIN, "kim", "wrong", "10.0.4.1")  # kim's fifth failure
    assert THROTTLED in sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.4.2").text
    assert THROTTLED in sign_in(client, DESK_LOGIN, "mallory", PASSWORD, "10.0.4.1").text


def test_a_success_clears_its_own_user_name_s_failures(client, clock):
    make_staff("kim")
    for number in range(4):
        sign_in(client, DESK_LOGIN, "kim", "wrong", f"10.0.5.{number}")
    assert signed_in(sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.5.9"))
    client.logout()
    for number in range(4):
        sign_in(client, DESK_LOGIN, "kim", "wrong", f"10.0.6.{number}")
    assert signed_in(sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.6.9"))


def test_attempts_sent_at_once_are_counted_before_any_password_is_checked(clock):
    from django.conf import settings

    attempts = [login_throttle.login_attempt_begin(address="10.0.7.1", username="kim") for _ in range(5)]
    assert len(attempts) == settings.LOGIN_MAX_FAILURES
    with pytest.raises(login_throttle.LoginThrottled) as throttled:
        login_throttle.login_attempt_begin(address="10.0.7.2", username="kim")
    assert throttled.value.retry_after_s == 300


def test_with_redis_unreachable_nobody_signs_in_and_the_page_says_why(client, settings):
    make_staff("kim")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    get_redis.cache_clear()
    try:
        response = sign_in(client, DESK_LOGIN, "kim", PASSWORD, "10.0.8.1")
    finally:
        get_redis.cache_clear()
    assert response.status_code == 200 and not signed_in(response)
    assert "Sign-in is unavailable for a moment" in response.text
