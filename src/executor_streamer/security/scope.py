"""A credential's scope: which streams it may subscribe to and publish into, and whether
it may administer the hub.

A pattern is a workflow session id (``wf-1``), a prefix ending in ``*`` (``tenant-a:*``)
or ``*`` alone. Patterns are matched against the workflow session id of the stream (a
stream named by its ``str_`` id is resolved first, by the caller). ``*`` inside a pattern
is not a wildcard anywhere but at its end, and a pattern never matches by case folding or
by any other normalisation: ``tenant-a:*`` does not match ``tenant-b:1`` nor ``TENANT-A:1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

# A workflow session id, optionally cut short and followed by "*"; or "*" alone.
_PATTERN = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\*?")


def pattern_matches(pattern: str, workflow_session_id: str) -> bool:
    if pattern.endswith("*"):
        return workflow_session_id.startswith(pattern[:-1])
    return workflow_session_id == pattern


@dataclass(frozen=True, slots=True)
class Scope:
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    admin: bool = False
    """Purge streams, disconnect clients, replay to a client, read hub-wide analytics
    and metrics, and subscribe to and publish into every stream."""

    def may_subscribe(self, workflow_session_id: str) -> bool:
        """Watch the stream (every transport), read its history, screenshots, stats and
        clients, and find it in the stream list."""
        return self.admin or any(pattern_matches(p, workflow_session_id) for p in self.subscribe)

    def may_subscribe_all(self) -> bool:
        """Whether :meth:`may_subscribe` holds for every stream, whatever its id."""
        return self.admin or "*" in self.subscribe

    def may_publish(self, workflow_session_id: str) -> bool:
        """Publish into the stream, and the producer's own lifecycle of it: create it,
        reopen it once closed, close it (purging it is the admin's)."""
        return self.admin or any(pattern_matches(p, workflow_session_id) for p in self.publish)

    def may_see(self, workflow_session_id: str) -> bool:
        """Read the stream's description (``GET /api/streams/{id}``): subscribers and
        publishers. Finding it in the stream list is watching: :meth:`may_subscribe`."""
        return self.may_subscribe(workflow_session_id) or self.may_publish(workflow_session_id)

    @classmethod
    def from_claim(cls, claim: object, path: str = "scope") -> Scope:
        """The scope a token's ``scope`` claim (or an API key's configured scope) states;
        raises InvalidInput naming what is wrong. A missing claim grants nothing."""
        if claim is None:
            return cls()
        if not isinstance(claim, Mapping):
            raise InvalidInput.single(path, "must be an object {subscribe, publish, admin}")
        unknown = sorted(set(claim) - {"subscribe", "publish", "admin"})
        if unknown:
            raise InvalidInput.single(f"{path}.{unknown[0]}", "is not a scope field")
        admin = claim.get("admin", False)
        if not isinstance(admin, bool):
            raise InvalidInput.single(f"{path}.admin", "must be true or false")
        return cls(
            _patterns(claim.get("subscribe", []), f"{path}.subscribe"),
            _patterns(claim.get("publish", []), f"{path}.publish"),
            admin,
        )

    def to_claim(self) -> dict[str, Any]:
        return {
            "subscribe": list(self.subscribe),
            "publish": list(self.publish),
            "admin": self.admin,
        }


def parse_pattern(value: str, path: str) -> str:
    """``value`` if it is a pattern, else InvalidInput naming ``path``."""
    if not _PATTERN.fullmatch(value):
        raise InvalidInput.single(
            path, f"{value!r} is not a workflow session id, a prefix ending in '*', or '*'"
        )
    return value


def _patterns(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidInput.single(path, "must be a list of patterns")
    for pattern in value:
        if not isinstance(pattern, str):
            raise InvalidInput.single(path, f"{pattern!r} is not a pattern (a string)")
        parse_pattern(pattern, path)
    return tuple(value)
