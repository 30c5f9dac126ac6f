"""Bearer tokens: the ones the cluster issues (client, exporter, router) and reading one from a call's metadata."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import grpc

from jsreplay.session.tokens import bearer_token


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


def bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's bearer token, read by the one rule every part of jsreplay uses (`session.tokens`)."""
    return bearer_token(context.invocation_metadata() or ())
