"""Names for the few plain SQL statements on the way to a first token, taken from the models, so
that a renamed table or column changes them too (`conversations.services`, `.selectors`)."""

from __future__ import annotations

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def columns(model: type[models.Model]) -> list[str]:
    """Every stored column of the model, in the order `Model.from_db` takes their values."""
    return [connection.ops.quote_name(f.column) for f in model._meta.concrete_fields]


def placeholders(values: tuple | list) -> str:
    """`%s, %s, ...`, one per value (for an IN list)."""
    return ", ".join(["%s"] * len(values))
