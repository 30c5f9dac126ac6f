"""Which token a call presents: the one rule for reading `authorization: Bearer <token>`.

The proxy routes router streams by it, replay and verify find a tunnel's recording by it, diff and show pair a
tunnel's two ends by it, and the fake cluster authenticates with it, so they must all read it alike.
"""

from __future__ import annotations

from collections.abc import Iterable

AUTHORIZATION = "authorization"
BEARER = "bearer"


def authorization_values(metadata: Iterable[tuple[str, object]]) -> list[object]:
    """Every `authorization` value of a call's metadata (keys compare case-insensitively)."""
    return [value for key, value in metadata if key.lower() == AUTHORIZATION]


def bearer_token(metadata: Iterable[tuple[str, object]]) -> str | None:
    """The token of the call's one `authorization: Bearer <token>` header (scheme case-insensitive, token
    stripped), or None: no such header, another scheme, an empty token, or more than one `authorization`
    header (a caller that sends two is not guessed between)."""
    values = authorization_values(metadata)
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        return None
    return token
