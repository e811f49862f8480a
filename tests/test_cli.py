"""The `chat-gateway` command line (PROTOCOL.md §6): the `token` subcommand, and
the refusal to serve a non-loopback address with the built-in dev secret."""

from __future__ import annotations

import subprocess
import time

import jwt
import pytest

from harness import config
from harness.http import validate
from harness.node import Node, free_port, run_cli, stop_all
from harness.tokens import Minter, assert_lifetime

KEYS = {"CHAT__AUTH__KEYS__DEV": config.SECRET, "CHAT__AUTH__SIGNING_KID": "dev"}


def mint_cli(tmp_path, *args: str, env=None) -> str:
    result = run_cli(["token", *args], tmp_path / "cli", {**KEYS, **(env or {})})
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token, f"stdout must be the JWT alone: {result.stdout!r}"
    return token


def test_token_command_prints_a_verifiable_jwt(tmp_path):
    t0 = time.time()
    token = mint_cli(tmp_path, "--role", "agent", "--sub", "agent-cli", "--name", "Cli Agent", "--ttl-secs", "120",
                     "--rooms", "news.*,alerts", "--pub", "news.*")
    t1 = time.time()
    claims = Minter().verify(token)
    assert (claims["role"], claims["sub"], claims["name"]) == ("agent", "agent-cli", "Cli Agent"), claims
    assert claims["rooms"] == ["news.*", "alerts"] and claims["pub"] == ["news.*"], claims
    assert_lifetime(claims, 120, (t0, t1), "--ttl-secs 120")


@pytest.mark.parametrize("role,ttl", [("customer", config.CUSTOMER_TTL), ("device", config.DEVICE_TTL),
                                      ("service", config.SERVICE_TTL), ("agent", config.AGENT_TTL)])
def test_token_command_default_lifetimes(tmp_path, role, ttl):
    t0 = time.time()
    claims = Minter().verify(mint_cli(tmp_path, "--role", role, "--sub", f"{role}-1"))
    assert_lifetime(claims, ttl, (t0, time.time()), f"{role} default lifetime")


def test_token_command_signs_with_the_signing_kid(tmp_path):
    keys = {"dev": config.SECRET, config.OTHER_KID: config.OTHER_SECRET}
    env = {f"CHAT__AUTH__KEYS__{config.OTHER_KID.upper()}": config.OTHER_SECRET,
           "CHAT__AUTH__SIGNING_KID": config.OTHER_KID}
    token = mint_cli(tmp_path, "--role", "device", "--sub", "d-1", env=env)
    assert jwt.get_unverified_header(token)["kid"] == config.OTHER_KID
    assert Minter(keys).verify(token)["sub"] == "d-1"


async def test_cli_token_is_accepted_by_a_node(gw, tmp_path):
    body = await validate(gw, mint_cli(tmp_path, "--role", "device", "--sub", "cli-device"))
    assert body["valid"] is True and body["userId"] == "cli-device", body


def test_token_command_needs_role_and_sub(tmp_path):
    result = run_cli(["token", "--sub", "x"], tmp_path / "cli", KEYS)
    assert result.returncode != 0, f"--role is required: {result}"


def test_dev_secret_refuses_a_non_loopback_bind(tmp_path):
    port = free_port()
    env = {"CHAT__SERVER__BIND": f"0.0.0.0:{port}", "CHAT__SHUTDOWN__DRAIN_SECS": "1"}
    try:
        result = run_cli(["serve"], tmp_path / "public", env, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("`serve` with the dev secret on 0.0.0.0 kept running; it must refuse to start")
    assert result.returncode != 0, "it must exit non-zero"
    text = (result.stdout + result.stderr).lower()
    assert "dev" in text and ("auth.keys" in text or "auth__keys" in text or "secret" in text), text[-2000:]


async def test_dev_secret_serves_on_loopback_and_matches_the_cli(tmp_path, track):
    """Without auth.keys the built-in dev secret serves a loopback node, and `token` signs with it."""
    node = track(Node(tmp_path, {"CHAT__AUTH__KEYS__DEV": None, "CHAT__AUTH__SIGNING_KID": None}, keys={}))
    try:
        node.start()
        result = run_cli(["token", "--role", "device", "--sub", "dev-secret-device"], tmp_path / "cli")
        assert result.returncode == 0, result.stderr
        body = await validate(node, result.stdout.strip())
        assert body["valid"] is True and body["userId"] == "dev-secret-device", body
        foreign = await validate(node, Minter().mint("device", "x"))
        assert foreign["valid"] is False and foreign["error"] == "TOKEN_INVALID", foreign
    finally:
        stop_all([node])
