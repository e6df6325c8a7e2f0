"""Conversations in the Django admin, read-only: their status and owner change only through the
services (the desk, the customer's chat, the worker), which keep their rules (the bot's silence,
the customer told, the queue, the times analytics read). Figures are rounded to what a person
reads; a bot answer's reasoning is collapsed, and so are the knowledge-base passages it was given
(numbered, the cited ones marked, each with its text as it was and a link to its help page)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from chatbot.conversations.models import AgentProfile, Conversation, Generation, Message, Note, Rating


def rounded_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def collapsed(label: str, text: str) -> str:
    if not text:
        return "—"
    return format_html("<details><summary>{}</summary><div class='reasoning'>{}</div></details>", label, text)


def help_link(url: str) -> str:
    """A link to a passage's help page, only for one of ours (/help/...) or a plain http(s) URL."""
    if not isinstance(url, str) or not (url.startswith("/help/") or url.startswith(("http://", "https://"))):
        return ""
    return format_html("<a href='{}' target='_blank' rel='noopener'>{}</a>", url, url)


def passage_item(passage: dict) -> str:
    relevance = passage.get("relevance")
    return format_html(
        "<li class='passage{}'><div class='passage__head'><b>[{}]</b> {}{} <span class='passage__meta'>{}{}</span>"
        "</div><div class='passage__text'>{}</div>{}</li>",
        " passage--cited" if passage.get("cited") else "",
        passage.get("n", "?"),
        passage.get("heading") or passage.get("title") or "",
        format_html(" — <i>{}</i>", passage["title"]) if passage.get("title") else "",
        f"relevance {relevance:.2f}" if isinstance(relevance, int | float) else "",
        format_html(" · <strong class='passage__cited'>{}</strong>", "cited") if passage.get("cited") else "",
        passage.get("text", ""),
        help_link(passage.get("url", "")),
    )


# What the worker's answer check did (inference_worker/grounding.py, Message.answer_check).
ANSWER_CHECKS = {
    "supported": "answer checked against its passage",
    "quoted": "the passage replaced the model's answer (its figures differed)",
    "unsupported": "no passage said it: the bot said it could not find it",
}


def passages_html(passages: list[dict] | None, check: str = "") -> str:
    """A bot answer's passages, collapsed: "Passages (3) · cited [1]", then each one."""
    passages = [p for p in passages or () if isinstance(p, dict)]
    if not passages:
        return ANSWER_CHECKS.get(check, "—")
    cited = " ".join(f"[{p.get('n')}]" for p in passages if p.get("cited")) or "none"
    checked = f" · {ANSWER_CHECKS[check]}" if check in ANSWER_CHECKS else ""
    return format_html(
        "<details class='passages'><summary>Passages ({}) · cited {}{}</summary><ol class='passages__list'>{}</ol></details>",
        len(passages),
        cited,
        checked,
        format_html_join("", "{}", ((passage_item(p),) for p in passages)),
    )


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MessageInline(ReadOnly, admin.TabularInline):
    model = Message
    fields = (
        "created_at",
        "author",
        "author_user",
        "text",
        "thinking",
        "used_passages",
        "model_variant",
        "ttft",
        "ttfa",
        "completion_tokens",
    )
    readonly_fields = fields
    extra = 0
    show_change_link = True

    @admin.display(description="reasoning")
    def thinking(self, message: Message) -> str:
        return collapsed("Reasoning", message.reasoning)

    @admin.display(description="knowledge-base passages")
    def used_passages(self, message: Message) -> str:
        return passages_html(message.passages, message.answer_check)

    @admin.display(description="time to first token")
    def ttft(self, message: Message) -> str:
        return rounded_ms(message.time_to_first_token_ms)

    @admin.display(description="time to first answer token", ordering="time_to_first_answer_token_ms")
    def ttfa(self, message: Message) -> str:
        return rounded_ms(message.time_to_first_answer_token_ms)


class NoteInline(ReadOnly, admin.TabularInline):
    model = Note
    fields = ("created_at", "author", "text")
    readonly_fields = fields
    extra = 0


def _whole_number(value: str) -> int:
    """A filter's value that must be a number (a score, a user's id); anything else is the
    admin's "wrong filter" (IncorrectLookupParameters: it goes back to the list, ``?e=1``), not an
    error page."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise IncorrectLookupParameters(f"not a number: {value[:40]!r}")
    return int(value)


class RatedFilter(admin.SimpleListFilter):
    title = "rated"
    parameter_name = "rated"

    def lookups(self, request, model_admin):
        return [("yes", "Rated"), ("no", "Not rated")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(rating__isnull=False)
        if self.value() == "no":
            return queryset.filter(rating__isnull=True)
        return queryset


class ScoreFilter(admin.SimpleListFilter):
    title = "rating score"
    parameter_name = "score"

    def lookups(self, request, model_admin):
        return [(str(score), str(score)) for score in range(1, 6)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(rating__score=_whole_number(self.value()))


class VariantFilter(admin.SimpleListFilter):
    title = "model variant that answered"
    parameter_name = "variant"

    def lookups(self, request, model_admin):
        from django.conf import settings

        return [(name, name) for name in settings.MODEL_VARIANTS]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        answered = Message.objects.filter(
            conversation=OuterRef("pk"), author=Message.Author.BOT, model_variant=self.value()
        )
        return queryset.filter(Exists(answered))


class HandedOffFilter(admin.SimpleListFilter):
    title = "handed off"
    parameter_name = "handed_off"

    def lookups(self, request, model_admin):
        return [("yes", "Handed to a person"), ("no", "The bot alone")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(escalated_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(escalated_at__isnull=True)
        return queryset


class AgentFilter(admin.SimpleListFilter):
    title = "agent"
    parameter_name = "agent"

    def lookups(self, request, model_admin):
        from django.contrib.auth import get_user_model

        return [(str(user.pk), user.get_username()) for user in get_user_model().objects.filter(is_staff=True)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        agent = _whole_number(self.value())
        return queryset.filter(Q(assigned_agent_id=agent) | Q(resolved_by_agent_id=agent))


@admin.register(Conversation)
class ConversationAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("public_id", "status", "assigned_agent", "handoff_reason", "score", "created_at", "last_message_at")
    list_filter = ("status", RatedFilter, ScoreFilter, VariantFilter, HandedOffFilter, AgentFilter, "handoff_reason")
    # Search by the text of the conversation's messages (and by its id).
    search_fields = ("public_id", "messages__text")
    readonly_fields = [f.name for f in Conversation._meta.fields]
    inlines = [MessageInline, NoteInline]
    list_select_related = ("assigned_agent", "rating")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        results, _ = super().get_search_results(request, queryset, search_term)
        return results.distinct() if search_term else results, False

    @admin.display(description="rating")
    def score(self, conversation: Conversation) -> str:
        rating = getattr(conversation, "rating", None)
        return "—" if rating is None else f"{rating.score} / 5"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm("conversations.view_analytics")


@admin.register(Message)
class MessageAdmin(ReadOnly, admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "author",
        "created_at",
        "model_variant",
        "completion_tokens",
        "ttft",
        "ttfa",
        "reasoning_cut",
    )
    list_filter = ("author", "model_variant", "no_answer", "reasoning_cut")
    search_fields = ("text",)
    exclude = ("reasoning", "passages")
    readonly_fields = [f.name for f in Message._meta.fields if f.name not in ("reasoning", "passages")] + [
        "thinking",
        "used_passages",
    ]

    @admin.display(description="reasoning")
    def thinking(self, message: Message) -> str:
        return collapsed("Reasoning", message.reasoning)

    @admin.display(description="knowledge-base passages")
    def used_passages(self, message: Message) -> str:
        return passages_html(message.passages, message.answer_check)

    @admin.display(description="time to first token", ordering="time_to_first_token_ms")
    def ttft(self, message: Message) -> str:
        return rounded_ms(message.time_to_first_token_ms)

    @admin.display(description="time to first answer token", ordering="time_to_first_answer_token_ms")
    def ttfa(self, message: Message) -> str:
        return rounded_ms(message.time_to_first_answer_token_ms)


@admin.register(Generation)
class GenerationAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "conversation", "kind", "status", "model_variant", "attempts", "worker", "created_at")
    list_filter = ("status", "kind", "model_variant")
    readonly_fields = [f.name for f in Generation._meta.fields]


@admin.register(Rating)
class RatingAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("conversation", "score", "credited_to", "agent", "created_at")
    list_filter = ("score", "credited_to")
    readonly_fields = [f.name for f in Rating._meta.fields]


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    """An agent's capacity is set here (their presence, at the desk)."""

    list_display = ("user", "presence", "capacity", "last_assigned_at")
    readonly_fields = ("presence", "last_assigned_at")
