"""Hub reachability is decided once, quickly, and switches huggingface_hub to offline mode."""

from __future__ import annotations

import socket

from common import hub


def test_unreachable_endpoint_switches_hub_offline(monkeypatch):
    # a closed local port: refused at once, no retries
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub.host_reachable.cache_clear()
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.hub_offline()
    assert hub.prepare_hub() is False
    assert constants.HF_HUB_OFFLINE is True
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")


def test_reachable_endpoint_and_explicit_offline(monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        port = srv.getsockname()[1]
        hub.host_reachable.cache_clear()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert not hub.hub_offline()
        assert hub.url_reachable(f"http://127.0.0.1:{port}/x.pth")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert hub.hub_offline()
        assert not hub.url_reachable("file:///x")
    finally:
        srv.close()
        hub.host_reachable.cache_clear()
