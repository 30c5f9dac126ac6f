"""Routing router streams through the proxy: rewrite `router_endpoint`, remember which router owns each token.

The controller hands out `{router_endpoint, router_token}` in Dial responses (to clients) and Listen messages
(to exporters). The proxy points `router_endpoint` at itself and remembers the real router for the token, so
a RouterService.Stream that presents the token can be forwarded to the router the upstream named, and to
nowhere else: a token the upstream never issued is refused. That keeps the proxy from being an open relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from jsreplay.protocol.registry import ProtocolError, Registry

# Methods whose responses carry a router endpoint and token, and the field names that hold them.
ENDPOINT_METHODS = {
    "/jumpstarter.v1.ControllerService/Dial",
    "/jumpstarter.v1.ControllerService/Listen",
}


@dataclass(frozen=True)
class Rewrite:
    forwarded: bytes  # the message as sent on to the caller
    router_endpoint: str  # the real router it named
    router_token: str


class RouterTable:
    """Token -> real router endpoint, filled only from upstream responses."""

    def __init__(self, registry: Registry, advertise: str) -> None:
        self._registry = registry
        self._advertise = advertise
        self._routes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def lookup(self, token: str) -> str | None:
        return self._routes.get(token)

    def rewrite(self, method: str, data: bytes) -> Rewrite | None:
        """For Dial/Listen responses: point the router endpoint at the proxy and learn the route."""
        if method not in ENDPOINT_METHODS:
            return None
        info = self._registry.method(method)
        if info is None:
            return None
        try:
            message = self._registry.parse(info.response_type, data)
        except ProtocolError:
            return None  # not ours to judge; forwarded and recorded unchanged
        endpoint = getattr(message, "router_endpoint", "")
        token = getattr(message, "router_token", "")
        if not endpoint or not token:
            return None
        self._routes[token] = endpoint
        message.router_endpoint = self._advertise
        return Rewrite(forwarded=message.SerializeToString(), router_endpoint=endpoint, router_token=token)
