"""Checking credentials (security/credentials.py): the adversarial cases, one test each.
Every bad credential gets the same ``Unauthorized``; only ``reason`` (for logs) differs."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from executor_streamer import Unauthorized
from executor_streamer.security import ApiKey, ApiKeys, JwtVerifier, Scope, mint_token

SECRET = "s3cret-of-at-least-32-bytes-for-hs256!"
SCOPE = {"subscribe": ["wf-*"], "publish": [], "admin": False}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "exp": now + 60, "iat": now, "scope": SCOPE}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as raised:
        verifier.verify(token)
    assert raised.value.message == "a valid credential is required"  # says nothing more
    return raised.value.reason


class TestJwt:
    verifier = JwtVerifier("HS256", SECRET)

    def test_a_good_token(self) -> None:
        principal = self.verifier.verify(hs256(claims()))
        assert principal.subject == "alice"
        assert principal.scope.may_subscribe("wf-1") and not principal.scope.may_publish("wf-1")
        assert principal.expires_at is not None

    def test_a_forged_signature(self) -> None:
        assert "Signature" in refused(
            self.verifier, hs256(claims(), "another-secret-32-bytes-long!!!!")
        )

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_in_any_case(self, alg: str) -> None:
        refused(self.verifier, unsigned({"alg": alg, "typ": "JWT"}, claims()))

    def test_hs256_signed_with_the_rs256_public_key(self) -> None:
        """Key confusion: an RS256 hub must not accept an HS256 token whose secret is its
        own public key."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        verifier = JwtVerifier("RS256", public)
        good = jwt.encode(claims(), private, algorithm="RS256")
        assert verifier.verify(good).subject == "alice"
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = unsigned(header, claims())[:-1].encode()
        import hmac as hmac_module

        signature = hmac_module.new(public, signing_input, hashlib.sha256).digest()
        forged = (
            signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        )
        refused(verifier, forged)

    def test_es256(self) -> None:
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = jwt.encode(claims(), private, algorithm="ES256")
        assert JwtVerifier("ES256", public).verify(token).subject == "alice"
        refused(JwtVerifier("HS256", SECRET), token)

    def test_expired_beyond_the_leeway(self) -> None:
        now = int(time.time())
        assert "Expired" in refused(self.verifier, hs256(claims(exp=now - 31)))
        assert self.verifier.verify(hs256(claims(exp=now - 5))).subject == "alice"  # leeway

    def test_missing_exp_or_sub(self) -> None:
        assert "exp" in refused(self.verifier, hs256(claims(exp=None)))
        assert "sub" in refused(self.verifier, hs256(claims(sub=None)))
        refused(self.verifier, hs256(claims(sub="")))

    def test_not_before_in_the_future(self) -> None:
        refused(self.verifier, hs256(claims(nbf=int(time.time()) + 120)))

    def test_audience_and_issuer_when_configured(self) -> None:
        verifier = JwtVerifier("HS256", SECRET, audience="hub", issuer="idp")
        assert verifier.verify(hs256(claims(aud="hub", iss="idp"))).subject == "alice"
        refused(verifier, hs256(claims(aud="other", iss="idp")))
        refused(verifier, hs256(claims(iss="idp")))
        refused(verifier, hs256(claims(aud="hub", iss="elsewhere")))
        refused(verifier, hs256(claims(aud="hub")))

    def test_a_malformed_scope_is_refused(self) -> None:
        refused(self.verifier, hs256(claims(scope={"subscribe": "wf-1"})))

    def test_garbage(self) -> None:
        for token in ["", "a.b.c", "not a token", "é.é.é"]:
            refused(self.verifier, token)

    def test_minted_tokens_verify(self) -> None:
        token = mint_token(SECRET, "bob", Scope(publish=("wf-1",)), 60)
        principal = self.verifier.verify(token)
        assert principal.subject == "bob" and principal.scope.may_publish("wf-1")


class TestApiKeys:
    def test_a_key_is_known_by_its_digest_only(self) -> None:
        digest = hashlib.sha256(b"producer-key").hexdigest()
        keys = ApiKeys([ApiKey("producer", digest, Scope(publish=("*",)))])
        principal = keys.verify("producer-key")
        assert principal.subject == "producer" and principal.expires_at is None
        assert principal.scope.may_publish("anything")
        for wrong in ["producer-keY", "", digest, "producer-key "]:
            with pytest.raises(Unauthorized):
                keys.verify(wrong)

    def test_lone_surrogates_are_refused_not_crashed_on(self) -> None:
        keys = ApiKeys([ApiKey("p", hashlib.sha256(b"k").hexdigest(), Scope())])
        with pytest.raises(Unauthorized):
            keys.verify("\ud800")
