from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "chatbot.analytics"
    verbose_name = "Support analytics"
