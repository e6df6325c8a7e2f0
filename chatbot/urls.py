from django.contrib import admin
from django.urls import path

from chatbot.conversations import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
