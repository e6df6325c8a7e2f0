"""Articles in the Django admin: staff write and publish the help center here. Saving and
deleting go through the services (validation, a revision, the search index rebuilt at once);
the revision history is read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from chatbot.knowledge import services
from chatbot.knowledge.models import Article, ArticleRevision


class ArticleForm(forms.ModelForm):
    class Meta:
        model = Article
        fields = ["title", "slug", "published", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 30, "cols": 100})}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            services.article_validate(
                article=self.instance if self.instance.pk else None,
                slug=(data.get("slug") or "").strip(),
                title=data.get("title") or "",
                body=data.get("body") or "",
            )
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                for message in messages:
                    if message not in self.errors.get(name, []):
                        self.add_error(name, message)
        return data

    def validate_unique(self) -> None:
        """The service checks the slug (with a message that names the other article)."""


class RevisionInline(admin.TabularInline):
    model = ArticleRevision
    extra = 0
    can_delete = False
    fields = ["revision", "created_at", "edited_by", "title", "published", "text"]
    readonly_fields = fields
    verbose_name_plural = "History (one revision per saved change)"

    @admin.display(description="text")
    def text(self, obj: ArticleRevision) -> str:
        return format_html(
            "<details><summary>{} characters</summary><pre class='revision-body'>{}</pre></details>",
            f"{len(obj.body):,}",
            obj.body,
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    form = ArticleForm
    list_display = ["title", "slug", "published", "updated_at", "revision", "page"]
    list_filter = ["published"]
    search_fields = ["title", "slug", "body"]
    readonly_fields = ["revision", "updated_at", "updated_by"]
    inlines = [RevisionInline]
    actions = ["delete_selected"]

    @admin.display(description="page")
    def page(self, obj: Article) -> str:
        if not obj.published:
            return "draft"
        return format_html('<a href="{}">/help/{}</a>', obj.get_absolute_url(), obj.slug)

    def save_model(self, request: HttpRequest, obj: Article, form: ArticleForm, change: bool) -> None:
        data = form.cleaned_data
        saved = services.article_save(
            article=Article.objects.get(pk=obj.pk) if change and obj.pk else None,
            slug=data["slug"],
            title=data["title"],
            body=data["body"],
            published=data["published"],
            user=request.user,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """The history is written by the service; nothing of it is edited here."""

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        services.article_delete(article=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        for article in queryset:
            services.article_delete(article=article)
