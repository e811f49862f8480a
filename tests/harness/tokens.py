"""Minting and checking JWTs the way PROTOCOL.md §1 describes them.

HS256 with a ``kid`` header; ``sub``, ``role``, ``exp``, ``iss`` and ``aud`` are
required, the rest optional.  ``Minter.bad(kind)`` produces each kind of bad
token that the token-error tests need.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Iterable

import jwt

from . import config

# Each kind of bad token, with the token-error code the gateway must report.
BAD_KINDS: dict[str, str] = {
    "expired": "TOKEN_EXPIRED",
    "bad-signature": "TOKEN_INVALID",
    "unknown-kid": "TOKEN_INVALID",
    "wrong-aud": "TOKEN_INVALID",
    "wrong-iss": "TOKEN_INVALID",
    "future-nbf": "TOKEN_INVALID",
    "no-sub": "TOKEN_INVALID",
    "no-role": "TOKEN_INVALID",
    "no-exp": "TOKEN_INVALID",
    "no-iss": "TOKEN_INVALID",
    "no-aud": "TOKEN_INVALID",
    "alg-none": "TOKEN_INVALID",
    "malformed": "TOKEN_MALFORMED",
}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Minter:
    def __init__(self, keys: dict[str, str] | None = None, kid: str = config.KID) -> None:
        self.keys = dict(keys or {config.KID: config.SECRET})
        self.kid = kid

    def mint(
        self,
        role: str,
        sub: str | None = None,
        name: str | None = None,
        *,
        ttl: float = 3600,
        exp: float | None = None,
        nbf: float | None = None,
        rooms: Iterable[str] | None = None,
        pub: Iterable[str] | None = None,
        kid: str | None = None,
        secret: str | None = None,
        drop: Iterable[str] = (),
        **claims: Any,
    ) -> str:
        now = time.time()
        body: dict[str, Any] = {
            "sub": sub or uid(role),
            "role": role,
            "iat": int(now),
            "exp": int(exp if exp is not None else now + ttl),
            "jti": uuid.uuid4().hex,
            "iss": config.ISSUER,
            "aud": config.AUDIENCE,
        }
        body["name"] = name if name is not None else f"{role} {body['sub'][-6:]}"
        if nbf is not None:
            body["nbf"] = int(nbf)
        if rooms is not None:
            body["rooms"] = list(rooms)
        if pub is not None:
            body["pub"] = list(pub)
        body.update(claims)
        for key in drop:
            body.pop(key, None)
        kid = kid or self.kid
        key = secret if secret is not None else self.keys.get(kid, config.FOREIGN_SECRET)
        return jwt.encode(body, key, algorithm="HS256", headers={"kid": kid})

    def bad(self, kind: str, role: str = "device", **kw: Any) -> str:
        """A token that fails verification in the way ``kind`` names (see BAD_KINDS)."""
        now = time.time()
        kw.setdefault("rooms", ["*"])
        if kind == "expired":
            return self.mint(role, exp=now - 3600, **kw)
        if kind == "bad-signature":
            return self.mint(role, secret=config.FOREIGN_SECRET, **kw)
        if kind == "unknown-kid":
            return self.mint(role, kid="nobody", secret=config.FOREIGN_SECRET, **kw)
        if kind == "wrong-aud":
            return self.mint(role, aud="somebody-else", **kw)
        if kind == "wrong-iss":
            return self.mint(role, iss="not-the-gateway", **kw)
        if kind == "future-nbf":
            return self.mint(role, nbf=now + 3600, **kw)
        if kind.startswith("no-"):
            return self.mint(role, drop=[kind[3:]], **kw)
        if kind == "alg-none":
            claims = jwt.decode(self.mint(role, **kw), options={"verify_signature": False})
            return jwt.encode(claims, None, algorithm="none", headers={"kid": config.KID})
        if kind == "malformed":
            return "lk_demo_iW4eC9" + secrets.token_hex(12)
        raise ValueError(kind)

    def verify(self, token: str) -> dict[str, Any]:
        """Decode with the key the ``kid`` header names; every required claim must be there."""
        kid = jwt.get_unverified_header(token).get("kid")
        assert kid in self.keys, f"token signed with unknown kid {kid!r}"
        return jwt.decode(
            token,
            self.keys[kid],
            algorithms=["HS256"],
            audience=config.AUDIENCE,
            issuer=config.ISSUER,
            options={"require": ["sub", "role", "exp", "iss", "aud"]},
        )


def assert_lifetime(claims: dict, ttl: float, issued: tuple[float, float], what: str) -> None:
    lo, hi = issued[0] + ttl - config.LIFETIME_TOLERANCE, issued[1] + ttl + config.LIFETIME_TOLERANCE
    assert lo <= claims["exp"] <= hi, f"{what}: exp {claims['exp']} is not about {ttl:.0f}s after issue ({claims})"
