"""Every page (chat, desk, its login, analytics, the admin and its pages) carries a strict
Content-Security-Policy, and keeps to it: no inline script, no inline style, no event handler
attributes."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from chatbot.conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser(username="root", email="", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    client.force_login(user)
    return client


def policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def inline_problems(html: str) -> list[str]:
    problems = []
    for tag in re.findall(r"<script\b[^>]*>", html, re.I):
        if "src=" not in tag and 'type="application/json"' not in tag:
            problems.append(tag)
    problems += re.findall(r"<style\b[^>]*>", html, re.I)
    problems += re.findall(r"<[^>]*\sstyle\s*=[^>]*>", html, re.I)
    problems += re.findall(r"<[^>]*\son[a-z]+\s*=[^>]*>", html, re.I)
    return problems


def pages(client) -> list[str]:
    conversation = Conversation.objects.create(visitor_id="v-csp")
    Message.objects.create(
        conversation=conversation, author=Message.Author.BOT, text="Hello", reasoning="thinking it over"
    )
    return [
        "/",
        "/desk/",
        "/analytics/",
        "/admin/",
        "/admin/serving/servingstate/",
        f"/admin/conversations/conversation/{conversation.pk}/change/",
        "/admin/conversations/message/",
    ]


def test_the_policy_is_strict_and_lets_the_sockets_connect_to_this_host_only(client):
    response = client.get("/")
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'", "ws://testserver"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    secure = client.get("/", secure=True)
    assert policy(secure)["connect-src"] == ["'self'", "wss://testserver"]


@pytest.mark.parametrize("path", ["/desk/login/", "/admin/login/"])
def test_the_login_pages_carry_the_policy_and_keep_to_it(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert policy(response)["script-src"] == ["'self'"]
    assert inline_problems(response.text) == []


def test_every_staff_page_carries_the_policy_and_keeps_to_it(staff_client):
    for path in pages(staff_client):
        response = staff_client.get(path)
        assert response.status_code == 200, path
        assert policy(response)["script-src"] == ["'self'"], path
        assert inline_problems(response.text) == [], path
