from django.urls import path

from chatbot.conversations.consumers import CustomerChatConsumer

websocket_urlpatterns = [path("ws/chat/", CustomerChatConsumer.as_asgi())]
