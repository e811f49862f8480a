"""Numbers and key material shared by the harness and the tests.

Every wait in the suite is bounded by one of the numbers below.  On a slow
machine ``GATEWAY_TEST_TIME_SCALE=2`` stretches all of them at once (it never
changes what a node is configured with, only how long the tests wait).
"""

from __future__ import annotations

import os
from pathlib import Path

TIME_SCALE = float(os.environ.get("GATEWAY_TEST_TIME_SCALE", "1.0"))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE


# tests/harness/config.py -> the repository root is two levels above tests/harness.
REPO_ROOT = Path(__file__).resolve().parents[2]

# A frame (or a close) that the contract says must come.
FRAME_WAIT = scaled(5.0)
# How long to watch for a frame that must NOT come.
QUIET = scaled(0.6)
HTTP_TIMEOUT = scaled(10.0)
OPEN_TIMEOUT = scaled(10.0)
# Node start-up: until GET /healthz answers 200.
STARTUP = scaled(20.0)
# Between SIGTERM and SIGKILL at teardown (all nodes of a test together).
STOP_GRACE = scaled(3.0)
# Hard limit of one async test unless it is marked @pytest.mark.deadline(s).
TEST_DEADLINE = scaled(30.0)
# Slack added to contract timeouts that a test waits out (timer granularity,
# a ping interval, scheduling on a loaded 2-core machine).
SLACK = scaled(2.5)

# Claims and keys.  Every node the harness starts knows SECRET under kid "dev".
ISSUER = "chat-gateway"
AUDIENCE = "chat"
KID = "dev"
SECRET = "gateway-tests-secret-3b8e1f0c7a9d2e4f6a1c3e5b7d9f0a2c"  # >= 32 bytes for HS256
# A second verifying key (rotation) and a secret no node knows.
OTHER_KID = "k2"
OTHER_SECRET = "gateway-tests-second-key-5c7e9a1b3d5f7092a4c6e8f0b2d4f6a8"
FOREIGN_SECRET = "gateway-tests-foreign-secret-00112233445566778899aabbccdd"

# Contract defaults (PROTOCOL.md §1, §3, §6) the tests compare against.
PROTOCOL_VERSION = 1
CUSTOMER_TTL = 24 * 3600
AGENT_TTL = 8 * 3600
DEVICE_TTL = 24 * 3600
SERVICE_TTL = 3600
LIFETIME_TOLERANCE = 15.0

# Set on every node: a token-request limit high enough that tests sharing one
# node never trip it (the rate-limit test configures its own), and a short drain
# so that teardown does not wait out the default 10 s.
NODE_DEFAULTS = {
    "CHAT__LIMITS__TOKEN_REQUESTS_PER_MIN": "100000",
    "CHAT__SHUTDOWN__DRAIN_SECS": "1",
}

REDIS_SERVER = os.environ.get("GATEWAY_TEST_REDIS_SERVER", "redis-server")
