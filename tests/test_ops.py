"""Operations (PROTOCOL.md §2, §3): /healthz, /readyz, /metrics, and the drain on
SIGTERM (readiness off, SERVER_BUSY for new upgrades, 1012 for open connections,
exit 0)."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest

from harness import config
from harness.http import call
from harness.ws import Rejected, bounded_poll, chat, open_ws, push


async def test_healthz_and_readyz(gw):
    assert (await call(gw, "GET", "/healthz")).status_code == 200
    assert (await call(gw, "GET", "/readyz")).status_code == 200


async def test_metrics_is_prometheus_text(gw, tokens):
    await chat(gw, tokens.mint("agent"))  # something to count
    resp = await call(gw, "GET", "/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("content-type", "").startswith(("text/plain", "application/openmetrics-text")), resp.headers
    text = resp.text
    assert re.search(r"^# TYPE \w+ (counter|gauge|histogram|summary|untyped|unknown|info|stateset|gaugehistogram)$",
                     text, re.M), text[:500]
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples, "no samples"
    for line in samples:
        assert re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEinfINFNa]+( \d+)?$", line), line


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["http", "close"])
async def test_sigterm_drains(start_node, tokens, mode):
    node = start_node({"CHAT__SHUTDOWN__DRAIN_SECS": "3", "CHAT__AUTH__HANDSHAKE_ERRORS": mode})
    conns = [await chat(node, tokens.mint("agent"), label=f"chat-{i}") for i in range(3)]
    conns.append(await push(node, tokens.mint("device", rooms=["*"]), "drain", label="push"))
    node.signal(signal.SIGTERM)
    t0 = time.monotonic()

    async def not_ready() -> bool:
        return (await call(node, "GET", "/readyz")).status_code == 503

    await bounded_poll(not_ready, timeout=1.0, interval=0.05, desc="/readyz 503 at once after SIGTERM")
    try:
        ws = await open_ws(node.ws_url("/ws/chat"), label="during-drain")
    except Rejected as rej:
        assert mode == "http", f"close mode accepts, then closes 1013: got HTTP {rej.status}"
        assert rej.status == 503 and rej.headers.get("x-websocket-error-code") == "SERVER_BUSY", rej
        assert (rej.headers.get("retry-after") or "").strip(), rej.headers
    else:
        assert mode == "close", "a draining node refuses new upgrades"
        await ws.closed_with(1013, "SERVER_BUSY")
        assert ws.frames == []
    for ws in conns:
        await ws.closed_with(1012, "SERVICE_RESTART", timeout=3 + config.SLACK - (time.monotonic() - t0))
    code = await asyncio.to_thread(node.wait, 3 + config.SLACK)
    assert code == 0, f"a drained node exits 0, got {code}"
