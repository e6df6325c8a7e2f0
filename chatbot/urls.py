from django.contrib import admin
from django.urls import include, path

from chatbot.conversations import views
from chatbot.security.forms import AdminLoginForm

# The admin's login is throttled like the desk's (chatbot/security/login_throttle.py).
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("healthz", views.healthz, name="healthz"),
    path("desk/", include("chatbot.desk.urls")),
    path("analytics/", include("chatbot.analytics.urls")),
    path("help/", include("chatbot.knowledge.urls")),
    path("admin/", admin.site.urls),
]
