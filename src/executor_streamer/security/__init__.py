"""Who may do what: credentials (JWTs, API keys) and the scope they carry.

Knows nothing of HTTP: the server reads a credential from a header, a first WebSocket
message or a ticket, and asks here who it belongs to and what it may do.
"""

from .credentials import ApiKey, ApiKeys, JwtVerifier, Principal, mint_token
from .scope import Scope, pattern_matches

__all__ = [
    "ApiKey",
    "ApiKeys",
    "JwtVerifier",
    "Principal",
    "Scope",
    "mint_token",
    "pattern_matches",
]
