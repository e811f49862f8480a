"""Processes under test: gateway nodes (``chat-gateway serve``), the ``token`` CLI,
and a private redis-server for cluster tests.

A node is configured only through ``CHAT__SECTION__KEY`` variables (no config
file: every key has a built-in default), listens on a free 127.0.0.1 port, runs
in its own empty working directory and writes stdout+stderr to a log file whose
tail the test report shows on failure.  Teardown sends SIGTERM to the child's
pid, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import httpx

from . import config
from .tokens import Minter


class HarnessError(RuntimeError):
    pass


def gateway_bin() -> Path:
    """GATEWAY_BIN, resolved relative to the repository root; default target/debug/chat-gateway."""
    value = os.environ.get("GATEWAY_BIN") or "target/debug/chat-gateway"
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = config.REPO_ROOT / path
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The caller's environment minus any CHAT__* variable, plus ``extra`` (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT__")}
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"  # plain log files
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


class Process:
    """A child process in its own session whose output goes to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)  # our own child's pid, nothing else

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def stop_all(procs: Iterable[Process], grace: float = config.STOP_GRACE) -> None:
    """SIGTERM every process at once, wait ``grace`` seconds for all, then SIGKILL the rest."""
    procs = [p for p in procs if p.proc is not None]
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        p.wait(deadline - time.monotonic())
    for p in procs:
        if p.alive():
            p.signal(signal.SIGKILL)
            p.wait(10)


class Node(Process):
    """One ``chat-gateway serve`` process.  ``env`` adds or (with None) removes CHAT__ keys."""

    def __init__(self, workdir: Path, env: Mapping[str, Any] | None = None, *, node_id: str | None = None,
                 service_token: str | None = None, keys: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.node_id = node_id or f"node-{self.port}"
        self.service_token = service_token or f"svc-{secrets.token_urlsafe(18)}"
        self.keys = dict(keys if keys is not None else {config.KID: config.SECRET})
        self.tokens = Minter(self.keys)
        full = {
            **config.NODE_DEFAULTS,
            "CHAT__SERVER__BIND": f"127.0.0.1:{self.port}",
            "CHAT__SERVER__NODE_ID": self.node_id,
            "CHAT__AUTH__SIGNING_KID": config.KID,
            "CHAT__AUTH__SERVICE_TOKEN": self.service_token,
        }
        full.update({f"CHAT__AUTH__KEYS__{kid.upper()}": secret for kid, secret in self.keys.items()})
        full.update(env or {})
        self.config = {k: v for k, v in full.items() if v is not None}
        cwd = workdir / self.node_id
        super().__init__(f"chat-gateway[{self.node_id}]", [str(gateway_bin()), "serve"], clean_env(full), cwd,
                         workdir / f"{self.node_id}.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str, query: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def _status(self, path: str) -> int | None:
        try:
            with httpx.Client(trust_env=False, timeout=1.0) as client:
                return client.get(self.base_url + path).status_code
        except httpx.HTTPError:
            return None

    def start(self, timeout: float = config.STARTUP) -> "Node":
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited with {self.proc.returncode} before serving:\n{self.tail()}")
            if self._status("/healthz") == 200:
                return self
            time.sleep(0.05)
        raise HarnessError(f"{self.name}: GET /healthz did not answer 200 within {timeout:.0f}s:\n{self.tail()}")

    def wait_ready(self, timeout: float = config.STARTUP) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._status("/readyz") == 200:
                return
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: /readyz not 200 within {timeout:.0f}s:\n{self.tail()}")


def run_cli(args: Iterable[str], cwd: Path, env: Mapping[str, Any] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``chat-gateway ARGS`` to completion in ``cwd`` with only the given CHAT__ keys."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(gateway_bin()), *args], env=clean_env(env), cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


class Redis(Process):
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        data = workdir / f"redis-{self.port}"
        argv = [config.REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(data)]
        super().__init__(f"redis[{self.port}]", argv, clean_env(), data, workdir / f"redis-{self.port}.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Redis":
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited:\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise HarnessError(f"{self.name} did not answer PING within {timeout:.0f}s")
