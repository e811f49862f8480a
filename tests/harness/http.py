"""HTTP helpers: one short-lived httpx client per call (no proxies from the
environment, bounded timeout) and assertions on the contract's bodies."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import httpx

from . import config

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|\+00:00)$")
SERVICE = object()  # pass token=SERVICE to use the node's configured service token


async def call(node: Any, method: str, path: str, *, token: Any = None, json: Any = None,
               content: bytes | str | None = None, params: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None, local_address: str | None = None) -> httpx.Response:
    hdrs = dict(headers or {})
    if token is SERVICE:
        token = node.service_token
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    async with httpx.AsyncClient(base_url=node.base_url, trust_env=False, timeout=config.HTTP_TIMEOUT,
                                 transport=transport) as client:
        return await client.request(method, path, json=json, content=content, params=params, headers=hdrs)


def show(resp: httpx.Response) -> str:
    return f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text[:400]!r}"


def body_of(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, f"expected HTTP {status}: {show(resp)}"
    if status == 204 or not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        raise AssertionError(f"body is not JSON: {show(resp)}") from None


def error_of(resp: httpx.Response, status: int, code: str | tuple[str, ...]) -> dict:
    """The standard error body {"error": CODE, "message": text} with the given status."""
    codes = code if isinstance(code, tuple) else (code,)
    body = body_of(resp, status)
    assert isinstance(body, dict) and body.get("error") in codes, f"expected error {codes}: {show(resp)}"
    assert isinstance(body.get("message"), str) and body["message"].strip(), f"error needs a message: {show(resp)}"
    return body


def epoch(value: Any, what: str = "time") -> float:
    """An RFC 3339 UTC time with milliseconds, as epoch seconds."""
    assert isinstance(value, str) and RFC3339_MS.match(value), f"{what} is not RFC 3339 UTC with ms: {value!r}"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


# -------------------------------------------------------------- route helpers
async def customer_token(node: Any, name: str = "Ann", channel: str = "web", **extra: Any) -> dict:
    body = body_of(await call(node, "POST", "/api/v1/public/customer-token",
                              json={"name": name, "channel": channel, **extra}), 201)
    return body


async def create_agent(node: Any, username: str, password: str, name: str) -> str:
    resp = await call(node, "POST", "/api/v1/admin/agents", token=SERVICE,
                      json={"username": username, "password": password, "name": name})
    agent_id = body_of(resp, 201).get("agentId")
    assert isinstance(agent_id, str) and agent_id, show(resp)
    return agent_id


async def login(node: Any, username: str, password: str) -> httpx.Response:
    return await call(node, "POST", "/api/v1/public/login", json={"username": username, "password": password})


async def validate(node: Any, token: str) -> dict:
    return body_of(await call(node, "GET", "/api/v1/public/validate-token", params={"token": token}), 200)


async def publish(node: Any, room: str, data: Any, event: str | None = None, token: Any = SERVICE) -> httpx.Response:
    body: dict[str, Any] = {"data": data}
    if event is not None:
        body["event"] = event
    return await call(node, "POST", f"/api/v1/rooms/{room}/publish", json=body, token=token)


async def presence(node: Any, room: str, token: Any = SERVICE) -> httpx.Response:
    return await call(node, "GET", f"/api/v1/rooms/{room}/presence", token=token)


async def new_agent(node: Any, name: str | None = None) -> dict:
    """An agent account created through the admin API: {id, username, password, name}."""
    suffix = uuid.uuid4().hex[:10]
    account = {"username": f"agent_{suffix}", "password": f"pw-{suffix}-x", "name": name or f"Agent {suffix[:4]}"}
    account["id"] = await create_agent(node, account["username"], account["password"], account["name"])
    return account
