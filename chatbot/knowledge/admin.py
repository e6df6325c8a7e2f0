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
    # A plain field: the service checks the slug, with its own message.
    slug = forms.CharField(required=False, help_text="The page's address: /help/<slug>. Letters, digits, - and _.")

    class Meta:
        model = Article
        fields = ["title", "slug", "published", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 30, "cols": 100})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("title", "body"):
            self.fields[name].required = False  # the service's messages say what is missing

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
                if name in self.errors:
                    continue  # the field's own check said it already
                for message in messages:
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
        label = "draft (staff only)" if not obj.published else f"/help/{obj.slug}"
        return format_html('<a href="{}">{}</a>', obj.get_absolute_url(), label)

    def view_on_site(self, obj: Article) -> str:
        """The page itself (a draft is shown to staff only, marked as such)."""
        return obj.get_absolute_url()

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

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        services.article_delete(article=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        for article in queryset:
            services.article_delete(article=article)
