"""Model-hub reachability, decided once and fast.

Offline, huggingface_hub and friends retry each download with back-off (tens of seconds and dozens of warning
lines per model) before failing. `prepare_hub()` asks once, with a short timeout, whether the hub answers;
if not it switches huggingface_hub to offline mode, so a missing model fails at once with its own clear error
(and a model already in the local cache still loads). `url_reachable` does the same for plain URLs.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

HF_HOST = "huggingface.co"


@functools.lru_cache(maxsize=32)
def host_reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_reachable(url: str, timeout: float = 2.0) -> bool:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return False
    return host_reachable(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout)


def hub_offline() -> bool:
    """True when the Hugging Face hub cannot be used: HF_HUB_OFFLINE set, or the host does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HF_HOST}")
    return not url_reachable(endpoint)


def prepare_hub() -> bool:
    """Switch huggingface_hub to offline mode when the hub is unreachable. Returns True if online."""
    if not hub_offline():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except Exception:
        pass
    return False


__all__ = ["host_reachable", "url_reachable", "hub_offline", "prepare_hub"]
