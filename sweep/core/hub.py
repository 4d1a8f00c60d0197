"""Is the Hugging Face Hub reachable? Asked once, so offline loads fail in seconds, not after retries."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the Hub endpoint does not accept a TCP connection."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True
