"""Multi-node helpers: a private redis-server and 2-3 gateway nodes over it
(``broker.kind = redis``), all on 127.0.0.1.

* ``clusters(tmp_path, track)``: the body of a test module's ``cluster`` fixture
  (``yield from clusters(tmp_path, track)``), which gives ``make(n=3, env=None,
  *, aof=False, prefix=None)``: starts a redis-server on a free port, then ``n``
  nodes sharing it, one service token and the test signing key, and waits until
  every node's /readyz answers 200.  ``aof=True`` starts Redis with
  ``--appendonly yes --appendfsync always`` so that it can be killed and restarted
  on the same port and directory without losing what it acknowledged.
  Teardown stops the nodes first, then Redis; every process's log tail is attached
  to a failing test's report.
* Every node gets ``presence.node_ttl_secs = 3`` (``NODE_TTL``) and the lifted
  message rate of ``harness.chat.FAST``.
* ``readyz`` / ``wait_readyz``: the /readyz status (None when nothing answers).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import httpx
import pytest

from . import config
from .chat import FAST
from .node import HarnessError, Node, Redis, stop_all

NODE_TTL = 3
BASE_ENV = {"CHAT__BROKER__KIND": "redis", "CHAT__PRESENCE__NODE_TTL_SECS": str(NODE_TTL), **FAST}


class AofRedis(Redis):
    """redis-server with append-only persistence fsynced on every write; ``stop`` + ``start`` restarts it on the
    same port with the same data directory (the AOF is reloaded)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        argv = list(self.argv)
        argv[argv.index("--appendonly") + 1] = "yes"
        self.argv = argv + ["--appendfsync", "always"]

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        self.signal(sig)
        self.wait(timeout)
        if self.alive():
            raise HarnessError(f"{self.name} did not exit after signal {sig}")


class Cluster:
    def __init__(self, redis: Redis, nodes: list[Node]) -> None:
        self.redis, self.nodes = redis, nodes

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


def clusters(tmp_path: Path, track: Callable) -> Iterator[Callable[..., Cluster]]:
    """cluster(n=3, env=None, *, aof=False, prefix=None) -> a started Cluster (redis + n ready nodes)."""
    if shutil.which(config.REDIS_SERVER) is None and not Path(config.REDIS_SERVER).is_file():
        pytest.skip(f"cluster tests need {config.REDIS_SERVER}")
    nodes: list[Node] = []
    servers: list[Redis] = []

    def make(n: int = 3, env: dict[str, Any] | None = None, *, aof: bool = False,
             prefix: str | None = None) -> Cluster:
        redis = (AofRedis if aof else Redis)(tmp_path)
        servers.append(redis)
        track(redis)
        redis.start()
        full = {**BASE_ENV, "CHAT__REDIS__URL": redis.url, **(env or {})}
        if prefix is not None:
            full["CHAT__REDIS__KEY_PREFIX"] = prefix
        service = f"svc-{secrets.token_urlsafe(18)}"
        started = []
        for i in range(1, n + 1):
            node = Node(tmp_path, full, node_id=f"node{i}", service_token=service)
            nodes.append(node)
            track(node)
            started.append(node.start())
        for node in started:
            node.wait_ready()
        return Cluster(redis, started)

    yield make
    stop_all(nodes)
    stop_all(servers)


async def readyz(node: Node, timeout: float = 1.0) -> int | None:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
            return (await client.get(node.base_url + "/readyz")).status_code
    except httpx.HTTPError:
        return None


async def wait_readyz(nodes: Sequence[Node], status: int, timeout: float, since: float | None = None) -> float:
    """Poll /readyz of every node until all answer ``status``; returns the seconds from ``since``
    (default: now) until the last one did.  AssertionError after ``timeout`` seconds."""
    start = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    last: dict[str, int | None] = {}
    while pending:
        for node in list(pending):
            last[node.node_id] = await readyz(node)
            if last[node.node_id] == status:
                pending.remove(node)
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"/readyz of {[n.node_id for n in pending]} not {status} within {timeout:.1f}s "
                                 f"(last: {last})")
        await asyncio.sleep(0.1)
    return time.monotonic() - start
