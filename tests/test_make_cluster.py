"""`make cluster` (scripts/cluster.sh): the topology of deploy/docker-compose.yml as
local processes — a private redis-server, three nodes with broker.kind = redis, and
nginx in front when it is installed.

The script runs with free ports, a private run directory, and the binary under test
(GATEWAY_BIN, so it skips its release build). Every node must turn ready; through
nginx, requests rotate over the nodes, a customer gets a token, /ws/chat upgrades
through the proxy, and a room publish reaches /ws subscribers connected through it.
Then `scripts/cluster.sh stop` must drain the nodes (clients see 1012 through the
proxy), exit the foreground script with 0, and leave no process behind, nginx's
workers included. Without nginx the load-balancer part is skipped, and only it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from harness import config
from harness.http import body_of, call, customer_token, presence, publish
from harness.node import Process, clean_env, free_port, gateway_bin, stop_all
from harness.tokens import uid
from harness.ws import bounded_poll, chat, push, typed

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCRIPT = config.REPO_ROOT / "scripts" / "cluster.sh"
NODES = 3
READY_WAIT = config.scaled(60.0)
# The nodes drain for 1 s; nginx and redis-server stop in well under a second.
STOP_WAIT = config.scaled(60.0)
# What each recorded pid must still be running, so that a reused pid is never signalled.
PROGRAMS = {"redis": "redis-server", "nginx": "nginx", "supervisor": "cluster.sh"}


class Endpoint:
    """What the harness helpers need of a node: its URLs and the service token."""

    def __init__(self, port: int, service_token: str, name: str) -> None:
        self.port, self.service_token, self.name = port, service_token, name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str, query: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


def distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def proc_state(pid: int) -> str | None:
    """The state letter of a process, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them (nginx's workers, for one)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def status(url: str) -> int | None:
    try:
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            return client.get(url).status_code
    except httpx.HTTPError:
        return None


class LocalCluster:
    """One run of scripts/cluster.sh in the foreground, as `make cluster` runs it."""

    def __init__(self, workdir: Path, with_nginx: bool) -> None:
        redis_port, lb_port, *node_ports = distinct_free_ports(2 + NODES)
        self.run_dir = workdir / "run"
        self.service_token = f"svc-{secrets.token_urlsafe(18)}"
        self.nodes = [Endpoint(port, self.service_token, f"gw{i}") for i, port in enumerate(node_ports, 1)]
        self.lb = Endpoint(lb_port, self.service_token, "nginx") if with_nginx else None
        self.env = clean_env({
            "GATEWAY_BIN": str(gateway_bin()),
            "CLUSTER_RUN_DIR": str(self.run_dir),
            "CLUSTER_NODE_PORTS": " ".join(map(str, node_ports)),
            "CLUSTER_LB_PORT": str(lb_port),
            "CLUSTER_REDIS_PORT": str(redis_port),
            "CLUSTER_NGINX": "1" if with_nginx else "0",
            "CLUSTER_READY_TIMEOUT": str(int(READY_WAIT)),
            "REDIS_SERVER": config.REDIS_SERVER,
            "CHAT_SIGNING_SECRET": secrets.token_urlsafe(32),
            "CHAT_SERVICE_TOKEN": self.service_token,
            "CHAT__SHUTDOWN__DRAIN_SECS": "1",
        })
        self.script = Process("cluster.sh", ["bash", str(SCRIPT)], self.env, workdir, workdir / "cluster.sh.log")
        self.pids: dict[str, int] = {}

    def logs(self) -> list[Process]:
        """The logs the script writes, as Processes for the failure report (never spawned)."""
        names = ["redis", *(n.name for n in self.nodes)] + (["nginx-error"] if self.lb else [])
        return [Process(name, [], {}, self.run_dir, self.run_dir / "logs" / f"{name}.log") for name in names]

    def start(self) -> None:
        self.script.spawn()
        urls = [f"{n.base_url}/readyz" for n in self.nodes] + ([f"{self.lb.base_url}/readyz"] if self.lb else [])
        deadline = time.monotonic() + READY_WAIT
        while not all(status(url) == 200 for url in urls):
            if not self.script.alive():
                raise AssertionError(f"cluster.sh exited with {self.script.proc.returncode}:\n{self.script.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {READY_WAIT:.0f}s: {urls}\n{self.script.tail()}")
            time.sleep(0.2)
        for file in (self.run_dir / "pids").glob("*.pid"):
            self.pids[file.stem] = int(file.read_text().split()[0])

    def stop(self) -> subprocess.CompletedProcess:
        """`scripts/cluster.sh stop`, as from another terminal."""
        return subprocess.run(["bash", str(SCRIPT), "stop"], env=self.env, cwd=self.script.cwd, text=True,
                              capture_output=True, timeout=STOP_WAIT, stdin=subprocess.DEVNULL)

    def kill_leftovers(self) -> None:
        """Teardown after a failure: SIGKILL what the script started and left (only those)."""
        for name, pid in self.pids.items():
            program = PROGRAMS.get(name, "chat-gateway")
            if running(pid) and program in cmdline(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def local_cluster(tmp_path: Path, track) -> Iterator[LocalCluster]:
    if shutil.which(config.REDIS_SERVER) is None and not Path(config.REDIS_SERVER).is_file():
        pytest.skip(f"the local cluster needs {config.REDIS_SERVER}")
    cluster = LocalCluster(tmp_path, with_nginx=shutil.which("nginx") is not None)
    track(cluster.script)
    for log in cluster.logs():
        track(log)
    cluster.start()
    yield cluster
    if cluster.script.alive():
        cluster.stop()
    stop_all([cluster.script])
    cluster.kill_leftovers()


@pytest.mark.deadline(120)
async def test_make_cluster_serves_through_nginx_and_stops_cleanly(local_cluster: LocalCluster):
    c = local_cluster
    assert set(c.pids) >= {"supervisor", "redis", "gw1", "gw2", "gw3"} | ({"nginx"} if c.lb else set()), c.pids
    for node in c.nodes:
        assert body_of(await call(node, "GET", "/readyz"), 200)["node"] == node.name

    open_clients = []
    if c.lb is not None:
        lb = c.lb
        # Round robin, no stickiness: consecutive requests land on every node.
        seen = [body_of(await call(lb, "GET", "/healthz"), 200)["node"] for _ in range(2 * NODES)]
        assert set(seen) == {n.name for n in c.nodes}, f"nginx sent every request to {seen}"
        assert (await call(lb, "GET", "/metrics")).status_code in (403, 404), "/metrics must not be public"

        issued = await customer_token(lb, name="Through Nginx")
        customer = await chat(lb, issued["token"], label="customer@nginx")
        hello = customer.of("hello")[0]
        assert hello["authenticated"] is True and hello["node"] in {n.name for n in c.nodes}, hello
        await customer.ping()

        device = body_of(await call(lb, "GET", "/get/token", params={"isLogin": "false", "deviceId": uid("dev")}),
                         200)["data"]
        room = uid("nginx-room")
        subscribers = [await push(lb, device, room, label=f"push{i}@nginx") for i in range(NODES)]

        async def all_subscribed() -> bool:
            members = body_of(await presence(lb, room), 200)["members"]
            return sum(m["connections"] for m in members) == NODES

        await bounded_poll(all_subscribed, desc=f"{NODES} subscribers of {room} in the presence route")
        seq = body_of(await publish(lb, room, {"via": "nginx"}, event="smoke"), 202)["seq"]
        for ws in subscribers:
            notice = await ws.wait(typed("notice", room=room), desc=f"notice {seq}")
            assert (notice["seq"], notice["data"], notice.get("event")) == (seq, {"via": "nginx"}, "smoke"), notice
        open_clients = [customer, *subscribers]
    else:
        open_clients = [await chat(c.nodes[0], label="anonymous@gw1")]

    # Stop as from another terminal while clients are connected: the nodes drain first.
    every_pid = descendants(set(c.pids.values()))
    stopped = await asyncio.to_thread(c.stop)
    assert stopped.returncode == 0, f"cluster.sh stop: {stopped.returncode}\n{stopped.stdout}\n{stopped.stderr}"
    for ws in open_clients:
        await ws.closed_with(1012, "SERVICE_RESTART")
    assert await asyncio.to_thread(c.script.wait, STOP_WAIT) == 0, f"cluster.sh did not exit 0:\n{c.script.tail()}"

    left = {pid: cmdline(pid) for pid in every_pid if running(pid)}
    assert not left, f"still running after stop: {left}"
    for endpoint in [*c.nodes, *([c.lb] if c.lb else [])]:
        assert status(f"{endpoint.base_url}/healthz") is None, f"{endpoint.name} still answers"
    assert not list((c.run_dir / "pids").glob("*.pid")), "stop leaves no pid file behind"

    if c.lb is None:
        pytest.skip("nginx is not installed: start, readiness and stop were checked, the load-balancer part was not")
