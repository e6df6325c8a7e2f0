from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "chatbot.serving"
    verbose_name = "Model serving"
