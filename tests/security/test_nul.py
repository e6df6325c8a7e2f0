"""An address with a NUL character (``%00``) is refused with a 400 that says why, on every
page, where it used to reach PostgreSQL (which cannot hold NUL) as a server error; the same
pages still answer without it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from chatbot.knowledge.models import Article
from chatbot.security.nul import NUL_IN_ADDRESS

pytestmark = pytest.mark.django_db

ADDRESSES = [
    "/help/{}",  # an article's slug
    "/help/?q={}",  # the help center's search
    "/admin/conversations/conversation/?status={}",  # the admin's list filters
    "/admin/conversations/conversation/?variant={}",
    "/admin/conversations/conversation/?q={}",
    "/admin/knowledge/article/?q={}",
    "/analytics/?variant={}",
    "/?{}=1",  # a parameter's name
]


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_superuser(username="root", email="", password="pw"))
    Article.objects.create(slug="returns", title="Returns", body="## Return window\nWithin 30 days.\n", published=True)
    return client


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_nul_in_the_address_is_a_400_that_says_why(staff_client, address):
    response = staff_client.get(address.format("%00"))
    assert response.status_code == 400
    assert response.content.decode() == NUL_IN_ADDRESS
    assert "Content-Security-Policy" in response.headers


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_same_addresses_without_it_answer(staff_client, address):
    response = staff_client.get(address.format("returns" if address.startswith("/help/{") else "x"))
    assert response.status_code in (200, 302), (address, response.status_code)
