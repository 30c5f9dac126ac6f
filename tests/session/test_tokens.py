"""The one rule for the token a call presents."""

from __future__ import annotations

import pytest

from jsreplay.session.tokens import bearer_token


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("Authorization", "bearer  abc ")], "abc"),  # scheme and key case-insensitive, token stripped
        ([("user-agent", "x"), ("authorization", "Bearer redacted:0123456789ab")], "redacted:0123456789ab"),
        ([], None),
        ([("authorization", "Basic abc")], None),  # another scheme is not a bearer token
        ([("authorization", "Bearer ")], None),
        ([("authorization", "abc")], None),
        ([("authorization", b"Bearer abc")], None),  # a binary value is no header a peer sends
        ([("authorization", "Bearer abc"), ("authorization", "Bearer abc")], None),  # two: never guessed between
        ([("authorization", "Bearer abc"), ("AUTHORIZATION", "Bearer def")], None),
    ],
)
def test_bearer_token(metadata: list[tuple[str, object]], token: str | None) -> None:
    assert bearer_token(metadata) == token
