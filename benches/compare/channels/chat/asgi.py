"""ASGI entry point: the WebSocket route `/ws/` to the chat consumer, nothing over HTTP."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from chat.consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/", ChatConsumer.as_asgi())])}
)
