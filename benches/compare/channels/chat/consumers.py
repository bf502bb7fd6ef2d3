"""The Zajel load workload as a Channels consumer, shaped like the seed's chat consumer.

Per connection: the user id from the query string (`/ws/?user=<uuid>`), the connection joins
the group `user_<id>` and gets `{"type": "auth_ok"}`.

Per message (`{"type": "send", "id", "conversation": "dm.<lo>.<hi>", "body"}`, the frame the
Zajel load generator writes): friend check (`SISMEMBER friends:<me> <peer>`), store
(`RPUSH conv:<conversation> <json>`, whose reply is the seq), then the ack
`{"type": "sent", "re", "message"}` to the sender, then `group_send` to the recipient's group,
which delivers `{"type": "message", "message"}` through channels_redis to whichever worker
holds the recipient's connection. The same work as the bare relay's Redis store
(benches/src/relay), in the frames the load generator already reads.
"""

import json
import time
import uuid
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

# One connection pool per worker process for the message store.
STORE = aioredis.from_url(settings.REDIS_URL)


def parse_user(text):
    """A canonical UUID, or None."""
    try:
        return str(uuid.UUID(text)) if text else None
    except ValueError:
        return None


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        query = parse_qs(self.scope["query_string"].decode("latin-1"))
        self.user = parse_user(query.get("user", [""])[0])
        if self.user is None:
            await self.close(code=4001)
            return
        self.group = f"user_{self.user}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "auth_ok", "user": self.user})

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Bad JSON gets an error frame and the connection stays.
        try:
            content = json.loads(text_data or "")
        except ValueError:
            await self.error(None, "bad_request", "not JSON")
            return
        if not isinstance(content, dict):
            await self.error(None, "bad_request", "not an object")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        re = content.get("id")
        if content.get("type") != "send":
            await self.error(re, "bad_request", "unknown type")
            return
        conversation, body = content.get("conversation"), content.get("body")
        if not isinstance(conversation, str) or not isinstance(body, str):
            await self.error(re, "bad_request", "conversation and body required")
            return
        members = conversation.removeprefix("dm.").split(".")
        if len(members) != 2 or self.user not in members:
            await self.error(re, "not_member", "not your conversation")
            return
        peer = members[1] if members[0] == self.user else members[0]
        if not await STORE.sismember(f"friends:{self.user}", peer):
            await self.error(re, "not_friends", "you can only message friends")
            return
        message = {
            "id": str(uuid.uuid4()),
            "sender": self.user,
            "body": body,
            "sent_at": int(time.time() * 1000),
        }
        seq = await STORE.rpush(f"conv:{conversation}", json.dumps(message))
        message["conversation"] = conversation
        message["seq"] = seq
        await self.send_json({"type": "sent", "re": re, "duplicate": False, "message": message})
        await self.channel_layer.group_send(
            f"user_{peer}", {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event):
        await self.send_json({"type": "message", "message": event["message"]})

    async def error(self, re, code, text):
        await self.send_json({"type": "error", "re": re, "code": code, "message": text})
