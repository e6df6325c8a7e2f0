from django.apps import AppConfig


class DeskConfig(AppConfig):
    name = "chatbot.desk"
    verbose_name = "Agents' desk"
