from django.contrib.auth import views as auth_views
from django.urls import path

from chatbot.desk import views
from chatbot.security.forms import DeskLoginForm

app_name = "desk"
urlpatterns = [
    path("", views.desk_page, name="page"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="desk/login.html", authentication_form=DeskLoginForm, redirect_authenticated_user=False
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page=views.LOGIN_URL), name="logout"),
]
