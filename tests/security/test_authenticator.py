"""The authenticator's cache of verified tokens answers exactly as verifying every time
(security/authenticator.py, ``VerifiedTokens``): model-based, over random sequences of
good, expired, forged and tampered tokens."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from executor_streamer import Unauthorized
from executor_streamer.security import Authenticator, JwtVerifier, Principal, Scope
from executor_streamer.security.authenticator import VerifiedTokens

from ..waiting import eventually_blocking

SECRET = "authenticator-test-secret-" + "a" * 32
LEEWAY = 30


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _sign(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def universe() -> list[str]:
    """Tokens that differ from one another in every way a cache could confuse: the
    subject, the scope, the expiry (well clear of the leeway's edge, so real time passing
    during a test cannot flip an answer), the signature, the signing key and the alg."""
    now = int(time.time())
    tokens = []
    for sub in ("alice", "bob"):
        for exp in (now + 600, now - LEEWAY + 15, now - LEEWAY - 15, now - 3600):
            for scope in ({"subscribe": ["*"]}, {"admin": True}):
                tokens.append(_sign({"sub": sub, "exp": exp, "scope": scope}))
    good = tokens[0]
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    other_payload = _b64(
        orjson.dumps({"sub": "mallory", "exp": now + 600, "scope": {"admin": True}})
    )
    tokens += [
        f"{header}.{payload}.{flipped}",  # the good token, another signature
        f"{header}.{other_payload}.{signature}",  # the good signature, another payload
        _sign({"sub": "alice", "exp": now + 600}, "another-secret-" + "x" * 32),
        f"{_b64(orjson.dumps({'alg': 'none', 'typ': 'JWT'}))}.{payload}.",
        _sign({"sub": "alice", "exp": now + 600, "nbf": now + 600}),
        _sign({"exp": now + 600}),
        good + "x",
    ]
    return tokens


def outcome(principal: Principal | Exception) -> object:
    if isinstance(principal, Unauthorized):
        return "unauthorized"
    assert isinstance(principal, Principal), principal
    return principal.subject, principal.scope, principal.expires_at


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_cached_answers_equal_verifying_every_time(data: st.DataObject) -> None:
    tokens = universe()
    verifier = JwtVerifier("HS256", SECRET, leeway_seconds=LEEWAY)
    cached = Authenticator(jwt=verifier)
    picks = data.draw(st.lists(st.integers(0, len(tokens) - 1), min_size=1, max_size=40))

    async def run() -> None:
        for index in picks:
            token = tokens[index]
            try:
                expected: Principal | Exception = verifier.verify(token)
            except Unauthorized as exc:
                expected = exc
            try:
                got: Principal | Exception = await cached.verify(token)
            except Unauthorized as exc:
                got = exc
            assert outcome(got) == outcome(expected), index

    asyncio.run(run())


def test_an_entry_ends_when_the_verifier_would_start_refusing() -> None:
    verified = VerifiedTokens(leeway_seconds=LEEWAY)
    principal = Principal("alice", Scope(admin=True), _at(time.time() - LEEWAY + 0.3))
    verified.put("token", principal)
    assert verified.get("token") is principal
    # Until the moment the verifier would start refusing (exp plus the leeway), on the
    # clock VerifiedTokens reads (it takes no other); then the entry must be gone.
    assert principal.expires_at is not None
    refused_from = principal.expires_at.timestamp() + LEEWAY
    assert eventually_blocking(lambda: time.time() >= refused_from, 5), "the clock stood"
    assert verified.get("token") is None


def test_entries_are_bounded() -> None:
    verified = VerifiedTokens(leeway_seconds=0, capacity=3)
    principal = Principal("alice", Scope(), _at(time.time() + 600))
    for number in range(5):
        verified.put(f"t{number}", principal)
    assert [verified.get(f"t{n}") is not None for n in range(5)] == [False, False, True, True, True]


def test_api_keys_are_not_kept() -> None:
    verified = VerifiedTokens(leeway_seconds=0)
    verified.put("key", Principal("producer", Scope(), None))
    assert verified.get("key") is None


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
