from django.urls import path

from chatbot.knowledge import views

urlpatterns = [
    path("", views.help_index, name="help"),
    path("<str:slug>", views.help_article, name="help_article"),
]
