"""Who may do what: credentials (JWTs, API keys) and the scope they carry.

Knows nothing of HTTP: the server reads a credential from a header, a first WebSocket
message or a ticket, and asks here who it belongs to and what it may do.
"""

from .authenticator import Authenticator
from .credentials import ApiKey, ApiKeys, JwtVerifier, Principal, mint_token
from .rate_limits import RateLimits
from .scope import Scope, pattern_matches
from .tickets import Tickets

__all__ = [
    "ApiKey",
    "ApiKeys",
    "Authenticator",
    "JwtVerifier",
    "Principal",
    "RateLimits",
    "Scope",
    "Tickets",
    "mint_token",
    "pattern_matches",
]
