"""Checks on the text people send (customers and agents alike): refused with a protocol error
code and words that say why (docs/protocol.md, "Errors"); nothing is stored for a refused frame."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from chatbot.conversations.protocol import CLIENT_ID_RE, InvalidInput


def message_text_validate(*, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("empty_message", "The message is empty.")
    if len(text) > settings.MESSAGE_MAX_CHARS:
        raise InvalidInput(
            "message_too_long",
            f"The message is {len(text)} characters long; the limit is {settings.MESSAGE_MAX_CHARS}.",
        )
    if "\x00" in text:
        raise InvalidInput("malformed", "The message contains a NUL character.")
    return text.strip()


def client_id_validate(*, client_id: Any) -> str:
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise InvalidInput("invalid_client_id", "client_id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'.")
    return client_id
