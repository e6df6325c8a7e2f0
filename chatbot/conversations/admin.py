from django.contrib import admin

from chatbot.conversations.models import Conversation, Generation, Message, Rating


class MessageInline(admin.TabularInline):
    model = Message
    fields = (
        "created_at",
        "author",
        "text",
        "reasoning",
        "model_variant",
        "completion_tokens",
        "time_to_first_token_ms",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("public_id", "status", "assigned_agent", "created_at", "last_message_at")
    list_filter = ("status",)
    search_fields = ("public_id",)
    readonly_fields = ("public_id", "visitor_id", "created_at", "updated_at", "last_message_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "author",
        "created_at",
        "model_variant",
        "completion_tokens",
        "time_to_first_token_ms",
    )
    list_filter = ("author", "model_variant")
    search_fields = ("text",)
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "status", "model_variant", "attempts", "worker", "created_at", "finished_at")
    list_filter = ("status", "model_variant")
    readonly_fields = [f.name for f in Generation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("conversation", "score", "created_at")
    list_filter = ("score",)
