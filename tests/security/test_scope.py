"""Scope patterns (security/scope.py): exact ids, prefixes ending in '*', '*' alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor_streamer import InvalidInput
from executor_streamer.security import Scope, pattern_matches

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)


def reference(pattern: str, workflow_session_id: str) -> bool:
    """Matching written out by cases: '*' matches all; 'p*' those starting with 'p'."""
    if pattern == "*":
        return True
    if pattern[-1] == "*":
        prefix = pattern[:-1]
        return workflow_session_id[: len(prefix)] == prefix
    return pattern == workflow_session_id


class TestPatterns:
    @given(pattern=IDS | IDS.map(lambda p: p + "*") | st.just("*"), candidate=IDS)
    def test_matching_agrees_with_the_reference(self, pattern: str, candidate: str) -> None:
        assert pattern_matches(pattern, candidate) == reference(pattern, candidate)

    @given(prefix=IDS, rest=IDS)
    def test_a_prefix_matches_what_extends_it(self, prefix: str, rest: str) -> None:
        assert pattern_matches(prefix + "*", prefix + rest)

    @pytest.mark.parametrize(
        ("pattern", "candidate", "matches"),
        [
            ("tenant-a:*", "tenant-a:1", True),
            ("tenant-a:*", "tenant-b:1", False),
            ("tenant-a:*", "TENANT-A:1", False),
            ("tenant-a:*", "tenant-a", False),
            ("tenant-a", "tenant-a:1", False),
            ("wf-1", "wf-1", True),
            ("*", "anything", True),
        ],
    )
    def test_examples(self, pattern: str, candidate: str, matches: bool) -> None:
        assert pattern_matches(pattern, candidate) is matches


class TestScope:
    def test_each_right_is_its_own(self) -> None:
        """Subscribing does not imply publishing, nor the reverse; admin implies both."""
        scope = Scope.from_claim({"subscribe": ["wf-*"], "publish": ["wf-1"]})
        assert scope.may_subscribe("wf-9") and not scope.may_publish("wf-9")
        assert scope.may_publish("wf-1") and not scope.may_subscribe("other")
        admin = Scope.from_claim({"admin": True})
        assert admin.may_subscribe("x") and admin.may_publish("x")
        assert not Scope.from_claim(None).may_subscribe("wf-1")

    @pytest.mark.parametrize(
        ("claim", "path"),
        [
            ("all", "scope"),
            ({"subscribe": "wf-1"}, "scope.subscribe"),
            ({"subscribe": ["a*b"]}, "scope.subscribe"),
            ({"subscribe": ["**"]}, "scope.subscribe"),
            ({"publish": [""]}, "scope.publish"),
            ({"publish": [7]}, "scope.publish"),
            ({"admin": "yes"}, "scope.admin"),
            ({"read": ["*"]}, "scope.read"),
        ],
    )
    def test_malformed_claims_are_refused(self, claim: object, path: str) -> None:
        with pytest.raises(InvalidInput) as raised:
            Scope.from_claim(claim)
        assert raised.value.errors[0].path == path

    def test_round_trip(self) -> None:
        scope = Scope(("wf-*",), ("wf-1",), False)
        assert Scope.from_claim(scope.to_claim()) == scope
