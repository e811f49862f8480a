"""The deployment topology in deploy/ (read as files; nothing is built or run):

* deploy/docker-compose.yml: a redis service with append-only persistence and a
  healthcheck; exactly three gateway services built from deploy/Dockerfile and
  configured by CHAT__ variables (broker kind redis, a redis url naming the redis
  service, one shared signing secret given by an environment-variable reference,
  distinct node ids), each depending on redis being healthy; an nginx service with
  deploy/nginx.conf mounted;
* deploy/nginx.conf: an upstream listing the three gateways, WebSocket upgrade
  headers, no stickiness (ip_hash, sticky, hash);
* deploy/Dockerfile: multi-stage, the final stage copies from an earlier one and
  runs as a non-root USER.

GATEWAY_DEPLOY_DIR points the tests at another directory (default: deploy/ of the
repository).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from harness import config

yaml = pytest.importorskip("yaml", reason="PyYAML (tests/requirements.txt) parses docker-compose.yml")

pytestmark = pytest.mark.cluster

DEPLOY = Path(os.environ.get("GATEWAY_DEPLOY_DIR") or config.REPO_ROOT / "deploy").resolve()
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX = DEPLOY / "nginx.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_REF = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*")


def read(path: Path) -> str:
    assert path.is_file(), f"{path} does not exist"
    return path.read_text()


# ------------------------------------------------------------------ compose helpers
@pytest.fixture(scope="module")
def compose() -> dict:
    doc = yaml.safe_load(read(COMPOSE))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), f"{COMPOSE}: no services mapping"
    return doc


def services(doc: dict) -> dict[str, dict]:
    return {name: (svc or {}) for name, svc in doc["services"].items()}


def words(value: Any) -> list[str]:
    """A command/entrypoint/test as a list of words (string or list form)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def dockerfile_of(svc: dict) -> Path | None:
    build = svc.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    return (DEPLOY / context / dockerfile).resolve()


def is_redis(svc: dict) -> bool:
    image = str(svc.get("image", ""))
    return image.split("/")[-1].startswith("redis") or (words(svc.get("command"))[:1] == ["redis-server"])


def gateways(doc: dict) -> dict[str, dict]:
    return {name: svc for name, svc in services(doc).items() if dockerfile_of(svc) == DOCKERFILE.resolve()}


def redis_service(doc: dict) -> tuple[str, dict]:
    found = [(name, svc) for name, svc in services(doc).items() if is_redis(svc)]
    assert len(found) == 1, f"expected one redis service, found {[n for n, _ in found]}"
    return found[0]


def hostnames(name: str, svc: dict) -> set[str]:
    """Names other containers reach a service by: its name, hostname, container_name, network aliases."""
    names = {name}
    for key in ("hostname", "container_name"):
        if svc.get(key):
            names.add(str(svc[key]))
    networks = svc.get("networks")
    if isinstance(networks, dict):
        for net in networks.values():
            if isinstance(net, dict):
                names.update(str(a) for a in net.get("aliases") or [])
    return names


def mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2:
                out.append((parts[0], parts[1]))
        elif isinstance(vol, dict) and vol.get("source") and vol.get("target"):
            out.append((str(vol["source"]), str(vol["target"])))
    return out


# ------------------------------------------------------------------ docker-compose.yml
def test_redis_service_persists_with_aof_and_has_a_healthcheck(compose):
    name, svc = redis_service(compose)
    cmd = words(svc.get("command"))
    text = " ".join(cmd)
    assert re.search(r"--appendonly\s+yes", text), f"redis service {name!r} must run with --appendonly yes: {cmd}"
    assert any(dst.rstrip("/") == "/data" for _, dst in mounts(svc)), (
        f"redis service {name!r}: its AOF (/data) must live on a volume to survive re-creation: {mounts(svc)}")
    check = svc.get("healthcheck") or {}
    test = words(check.get("test"))
    assert test and test[0] != "NONE" and not check.get("disable"), f"redis service {name!r} needs a healthcheck"
    assert any("ping" in w.lower() for w in test), f"redis healthcheck should ping redis: {test}"


def test_exactly_three_gateways_built_from_the_dockerfile(compose):
    gws = gateways(compose)
    assert len(gws) == 3, (f"expected exactly three services built from {DOCKERFILE}, found {sorted(gws)} "
                           f"(services: {sorted(services(compose))})")


def test_gateways_are_configured_for_the_redis_cluster(compose):
    redis_name, redis_svc = redis_service(compose)
    redis_hosts = hostnames(redis_name, redis_svc)
    gws = gateways(compose)
    assert gws, "no gateway services"
    secrets_by_gw, node_ids = {}, {}
    for name, svc in gws.items():
        env = environment(svc)
        assert any(k.startswith("CHAT__") for k in env), f"{name}: not configured by CHAT__ variables: {env}"
        assert env.get("CHAT__BROKER__KIND") == "redis", f"{name}: CHAT__BROKER__KIND must be redis: {env}"
        url = urlparse(env.get("CHAT__REDIS__URL", ""))
        assert url.scheme in ("redis", "rediss") and url.hostname in redis_hosts, (
            f"{name}: CHAT__REDIS__URL must point at the redis service {sorted(redis_hosts)}: "
            f"{env.get('CHAT__REDIS__URL')!r}")
        keys = {k: v for k, v in env.items() if k.startswith("CHAT__AUTH__KEYS__")}
        assert keys, f"{name}: no signing key (CHAT__AUTH__KEYS__<KID>) configured"
        for key, value in keys.items():
            assert ENV_REF.search(value), f"{name}: {key} must come from an environment variable reference " \
                                          f"(${{VAR}}), not a literal secret: {value!r}"
        kid = env.get("CHAT__AUTH__SIGNING_KID", "dev").lower()
        signing = f"CHAT__AUTH__KEYS__{kid.upper()}"
        assert signing in keys, f"{name}: the signing kid {kid!r} has no key among {sorted(keys)}"
        secrets_by_gw[name] = (kid, keys[signing])
        node_ids[name] = env.get("CHAT__SERVER__NODE_ID")
        bind = env.get("CHAT__SERVER__BIND") or dockerfile_env().get("CHAT__SERVER__BIND", "")
        assert bind and not bind.startswith(("127.", "localhost", "[::1]")), (
            f"{name}: CHAT__SERVER__BIND must listen beyond loopback so nginx can reach it: {bind!r}")
    assert len(set(secrets_by_gw.values())) == 1, f"the gateways must share one signing secret: {secrets_by_gw}"
    assert all(node_ids.values()) and len(set(node_ids.values())) == len(node_ids), (
        f"every gateway needs its own CHAT__SERVER__NODE_ID: {node_ids}")


def test_gateways_wait_for_a_healthy_redis(compose):
    redis_name, _ = redis_service(compose)
    for name, svc in gateways(compose).items():
        deps = svc.get("depends_on")
        assert isinstance(deps, dict) and redis_name in deps, (
            f"{name}: depends_on must be the long form naming {redis_name!r} with a condition: {deps!r}")
        assert (deps[redis_name] or {}).get("condition") == "service_healthy", (
            f"{name}: must wait for {redis_name} to be healthy: {deps!r}")


def test_nginx_service_mounts_the_nginx_conf(compose):
    found = [(n, s) for n, s in services(compose).items() if str(s.get("image", "")).split("/")[-1].startswith("nginx")]
    assert len(found) == 1, f"expected one nginx service, found {[n for n, _ in found]}"
    name, svc = found[0]
    sources = [(src, dst) for src, dst in mounts(svc)
               if not src.startswith(("/", "$")) and (DEPLOY / src).resolve() == NGINX.resolve()]
    assert sources, f"{name}: deploy/nginx.conf is not mounted: {mounts(svc)}"
    assert any(dst.startswith("/etc/nginx/") for _, dst in sources), f"{name}: mounted outside /etc/nginx: {sources}"
    assert svc.get("ports"), f"{name}: nginx publishes no port"


# ------------------------------------------------------------------ nginx.conf
def nginx_text() -> str:
    return "\n".join(line.split("#", 1)[0] for line in read(NGINX).splitlines())


def blocks(text: str, keyword: str) -> list[tuple[str, str]]:
    """(argument, body) of every ``keyword ARG { ... }`` block, braces balanced."""
    out = []
    for m in re.finditer(rf"\b{keyword}\s+([^\s{{]+)\s*{{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((m.group(1), text[m.end():i - 1]))
    return out


def test_nginx_upstream_lists_the_three_gateways_without_stickiness(compose):
    text = nginx_text()
    ups = blocks(text, "upstream")
    assert ups, f"{NGINX}: no upstream block"
    gws = gateways(compose)
    wanted = {name: hostnames(name, svc) for name, svc in gws.items()}
    matching = []
    for up_name, body in ups:
        servers = [m.group(1).split(":")[0] for m in re.finditer(r"^\s*server\s+([^\s;]+)", body, re.M)]
        if all(hosts & set(servers) for hosts in wanted.values()):
            matching.append(up_name)
            for directive in ("ip_hash", "sticky", "hash"):
                assert not re.search(rf"^\s*{directive}\b", body, re.M), (
                    f"upstream {up_name} must not pin clients to a node ({directive})")
    assert matching, f"no upstream lists all of {sorted(wanted)}: {ups}"
    assert not re.search(r"^\s*(ip_hash|sticky)\b", text, re.M), "no ip_hash/sticky anywhere"
    for up_name in matching:
        assert re.search(rf"proxy_pass\s+https?://{re.escape(up_name)}\b", text), f"nothing proxies to {up_name}"


def test_nginx_passes_websocket_upgrades():
    text = nginx_text()
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", text, re.I), "Upgrade header not passed"
    connection = re.search(r"proxy_set_header\s+Connection\s+(\S+?)\s*;", text, re.I)
    assert connection, "Connection header not set"
    value = connection.group(1).strip("\"'")
    if value.startswith("$"):  # a map from $http_upgrade, e.g. $connection_upgrade
        assert re.search(rf"map\s+\$http_upgrade\s+{re.escape(value)}\s*{{", text), f"{value} is not mapped"
    else:
        assert value.lower() == "upgrade", f"Connection header {value!r}"
    assert re.search(r"proxy_http_version\s+1\.1\s*;", text), "WebSocket proxying needs proxy_http_version 1.1"


# ------------------------------------------------------------------ Dockerfile
def dockerfile_env() -> dict[str, str]:
    """ENV KEY=VALUE (or ENV KEY VALUE) of the final stage."""
    out = {}
    for line in stages()[-1] if DOCKERFILE.is_file() else []:
        parts = line.split(None, 1)
        if parts[0].upper() == "ENV" and len(parts) == 2:
            if "=" in parts[1].split()[0]:
                for item in shlex.split(parts[1]):
                    key, _, value = item.partition("=")
                    out[key] = value
            else:
                key, _, value = parts[1].partition(" ")
                out[key] = value.strip()
    return out


def stages() -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by FROM."""
    joined = re.sub(r"\\\s*\n", " ", read(DOCKERFILE))
    out: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0].upper() == "FROM":
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_dockerfile_is_multi_stage_and_runs_as_non_root():
    st = stages()
    assert len(st) >= 2, f"{DOCKERFILE} is not multi-stage ({len(st)} FROM)"
    final = st[-1]
    assert any(re.match(r"COPY\s+--from=", i, re.I) for i in final), f"the final stage copies nothing from a " \
                                                                     f"build stage: {final}"
    users = [i.split(None, 1)[1].strip() for i in final if i.split()[0].upper() == "USER"]
    assert users, f"the final stage sets no USER: {final}"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the final stage runs as {users[-1]!r}"
