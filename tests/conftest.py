"""Black-box tests of the `chat-gateway` binary against ../../shared/spec/PROTOCOL.md.

* GATEWAY_BIN names the binary (default ``target/debug/chat-gateway``, relative
  paths resolved against the repository root).  ``--collect-only`` needs none.
* ``gw`` is one node with contract defaults and ``pool(env)`` one node per
  configuration, shared by the tests that use them (they use unique user ids and
  room names, so they may run in any order); ``start_node(env)`` starts a
  private node for one test.
* ``async def`` tests run in a fresh event loop under a hard deadline
  (``@pytest.mark.deadline(s)``, default 30 s); WebSockets they opened are closed
  when they end.
* The tail of every log of the nodes a failing test used is attached to its report.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from harness import config
from harness.node import Node, Process, Redis, gateway_bin, stop_all
from harness.tokens import Minter
from harness.ws import close_all

PROCS = pytest.StashKey[list]()
P = TypeVar("P", bound=Process)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not session.items:
        return
    path = gateway_bin()
    if not path.is_file():
        pytest.exit(f"the gateway binary {path} does not exist: run `cargo build` or set GATEWAY_BIN",
                    returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    marker = pyfuncitem.get_closest_marker("deadline")
    deadline = config.scaled(marker.args[0]) if marker else config.TEST_DEADLINE
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run() -> None:
        try:
            await asyncio.wait_for(pyfuncitem.obj(**kwargs), deadline)
        except asyncio.TimeoutError:
            raise AssertionError(f"test exceeded its deadline of {deadline:.0f}s") from None
        finally:
            await close_all()

    asyncio.run(run())
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for proc in item.stash.get(PROCS, []):
            report.sections.append((f"log tail of {proc.name} ({proc.log_path})", proc.tail(60)))


def _track(request: pytest.FixtureRequest, proc: Process) -> None:
    request.node.stash.setdefault(PROCS, []).append(proc)


@pytest.fixture
def track(request: pytest.FixtureRequest) -> Callable[[Process], Process]:
    """track(proc) -> proc: attach the log tail of a process started elsewhere to this test's failure report."""

    def add(proc: Process) -> Process:
        _track(request, proc)
        return proc

    return add


@pytest.fixture(scope="session")
def _pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    nodes: dict[tuple, Node] = {}
    yield nodes
    stop_all(nodes.values())


@pytest.fixture
def pool(request: pytest.FixtureRequest, _pool: dict, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Node]:
    """pool(env) -> a node with that configuration, shared by every test asking for the same ``env``.

    Tests on a pooled node use unique user ids and room names and change no
    node-wide state.  A pooled node that died is replaced (the test that killed it
    has its log tail attached).
    """

    def get(env: dict[str, str] | None = None) -> Node:
        key = tuple(sorted((env or {}).items()))
        node = _pool.get(key)
        if node is None or not node.alive():
            node = Node(tmp_path_factory.mktemp("pooled"), env, node_id=f"pooled-{len(_pool) + 1}")
            _pool[key] = node.start()
        _track(request, node)
        return node

    return get


@pytest.fixture
def gw(pool: Callable[..., Node]) -> Node:
    """A node with contract defaults, shared with other tests."""
    return pool()


def _starter(request: pytest.FixtureRequest, make: Callable[..., P]) -> Iterator[Callable[..., P]]:
    """Yield start(*args, **kw) -> make(*args, **kw), tracked and started; stop them all at teardown."""
    procs: list[P] = []

    def start(*args: Any, **kw: Any) -> P:
        proc = make(*args, **kw)
        procs.append(proc)
        _track(request, proc)
        return proc.start()

    yield start
    stop_all(procs)


@pytest.fixture
def start_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """start_node(env=None, node_id=None, service_token=None, keys=None, wait=True) -> a private, started node."""

    def make(env: dict[str, Any] | None = None, **kw: Any) -> Node:
        return Node(tmp_path, env, **kw)

    yield from _starter(request, make)


@pytest.fixture
def start_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Redis]]:
    if shutil.which(config.REDIS_SERVER) is None and not Path(config.REDIS_SERVER).is_file():
        pytest.skip(f"cluster tests need {config.REDIS_SERVER}")
    yield from _starter(request, lambda: Redis(tmp_path))


@pytest.fixture
def tokens() -> Minter:
    """Mints tokens with the key every node started by the harness knows (kid "dev")."""
    return Minter()
