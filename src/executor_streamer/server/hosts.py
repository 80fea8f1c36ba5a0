"""DNS rebinding, for a hub without authentication: requests must name the hub.

A web page on ``http://rebind.attacker.test:3001`` whose name the attacker then points at
127.0.0.1 is, to the browser, same-origin with itself: it can read what a hub on loopback
answers without sending any ``Origin`` the hub could refuse. What such a request cannot
hide is the name it was sent to, in ``Host``. So, on a hub without authentication that
listens on loopback (the default), a request whose ``Host`` is a name other than
``localhost`` or the host of ``server.publicUrl`` is refused with 403, on every route and
transport. An IP address in ``Host`` passes: rebinding needs a name. With authentication
on, such a page has no credential; and a hub bound to a network address with
``security.allowInsecure`` answers anyone who reaches it anyway: ``Host`` is not checked.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from starlette.types import Scope

from ..config import ExecutorStreamerConfig


def own_host_names(
    config: ExecutorStreamerConfig, bound_host: str | None = None
) -> frozenset[str] | None:
    """The names a request may give in ``Host``; None when anything goes (auth on, or a
    hub bound to a network address). ``bound_host``: where it listens, if not the
    configured ``server.host``."""
    host = (bound_host or config.server.host).lower()
    if config.security.authentication_required or not (
        host == "localhost" or (_is_address(host) and ipaddress.ip_address(host).is_loopback)
    ):
        return None  # a hub open on the network already answers anyone there
    names = {"localhost"}
    if config.server.public_url is not None:
        name = (urlsplit(config.server.public_url).hostname or "").lower()
        names.add(name.encode("idna").decode("ascii"))  # what browsers send for it
    return frozenset(names)


def names_this_hub(scope: Scope, names: frozenset[str]) -> bool:
    """Whether the request's ``Host`` is an address or one of ``names``."""
    for key, value in scope["headers"]:
        if key == b"host":
            return host_passes(value, names)
    return True  # HTTP/1.0 without Host: no browser sends that


@functools.lru_cache(maxsize=1024)
def host_passes(value: bytes, names: frozenset[str]) -> bool:
    """The answer for one ``Host`` value, remembered: a hub's clients use a few, and
    parsing an address each request cost 5 µs of a publish (bench/README.md)."""
    host = value.decode("latin-1").lower()
    if host.startswith("["):  # [v6]:port
        return True
    name = (host.rpartition(":")[0] if ":" in host else host).removesuffix(".")
    return name in names or _is_address(name)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
