"""The login forms of the admin and the desk, throttled (`login_throttle.py`)."""

from __future__ import annotations

import logging
import math

import redis
from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from chatbot.security.login_throttle import LoginThrottled, login_attempt_begin, login_attempt_succeeded

logger = logging.getLogger(__name__)


def throttled_message(retry_after_s: int) -> str:
    minutes = math.ceil(retry_after_s / 60)
    wait = "a minute" if minutes <= 1 else f"{minutes} minutes"
    return (
        "Too many failed sign-ins for this user name or from this address. "
        f"For your account's safety, sign-in is paused: try again in {wait}."
    )


class ThrottledLoginMixin:
    """`clean` of Django's AuthenticationForm, counted by the login throttle first: a throttled
    attempt never reaches the password check. With Redis unreachable nobody can sign in (the
    throttle cannot be skipped by taking Redis down), and the form says so."""

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return super().clean()
        try:
            attempt = login_attempt_begin(address=self.request.META.get("REMOTE_ADDR", ""), username=username)
        except LoginThrottled as throttled:
            raise forms.ValidationError(throttled_message(throttled.retry_after_s), code="throttled") from None
        except redis.RedisError:
            logger.exception("login throttle: Redis is unreachable; sign-in refused")
            raise forms.ValidationError(
                "Sign-in is unavailable for a moment. Please try again shortly.", code="throttle_unavailable"
            ) from None
        cleaned = super().clean()  # raises ValidationError on a failed sign-in, which stays counted
        try:
            login_attempt_succeeded(attempt=attempt)
        except redis.RedisError:
            logger.exception("login throttle: could not record a successful sign-in")
        return cleaned


class DeskLoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
