"""The smallest Django settings that run a Channels consumer over channels_redis.

No database, no sessions, no auth apps: the benchmark's users identify themselves by id in the
query string (registration and login are not what is measured).
"""

import os

SECRET_KEY = "load-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = None
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "chat.asgi.application"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# The framework's own cross-process mechanism: a group per user on channels_redis.
# `capacity`: channels_redis 4 keeps one Redis list per worker process for all its consumers
# (and a local queue per consumer), 100 messages by default, and drops what a `group_send`
# adds beyond it (logged, not raised). With hundreds of users per worker, a worker 100
# deliveries behind would silently lose messages (seen at 160 msgs/s on a busy machine), so the
# benchmark raises it: it measures throughput, not that threshold.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 100_000},
    }
}
