from django.urls import path

from chatbot.analytics import views

app_name = "analytics"
urlpatterns = [
    path("", views.analytics_page, name="page"),
    path("export/<slug:name>.csv", views.analytics_csv, name="csv"),
]
