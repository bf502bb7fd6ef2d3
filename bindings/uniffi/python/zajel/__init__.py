"""Zajel's Python SDK: the Rust client (``zajel-client``) through uniffi.

Everything is re-exported from the generated module ``zajel.zajel``: ``register``,
``login``, ``connect``, ``start``, ``ZajelClient``, ``EventListener``, ``ZajelEvent``,
``ConnectionState``, ``ZajelError`` and the records. Async functions are asyncio coroutines.
See docs/mobile.md in the repository.
"""

import os as _os

if not _os.path.exists(_os.path.join(_os.path.dirname(__file__), "zajel.py")):
    raise ImportError(
        "zajel: the generated module is missing; run scripts/build-uniffi.sh before "
        "installing this package"
    )

import atexit as _atexit  # noqa: E402

from .zajel import *  # noqa: E402,F401,F403
from .zajel import shutdown as _shutdown  # noqa: E402

# A call from a library thread into a finalizing interpreter kills that thread with a forced
# unwind, which aborts the process: stop every client while the interpreter is still whole.
_atexit.register(_shutdown)
