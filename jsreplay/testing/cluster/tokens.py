"""Bearer tokens: the ones the cluster issues (client, exporter, router) and reading one from a call's metadata."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import grpc


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


def bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None
