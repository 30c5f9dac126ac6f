"""Routing router streams through the proxy: rewrite `router_endpoint`, remember which router owns each token.

The controller hands out `{router_endpoint, router_token}` in Dial responses (to clients) and Listen messages
(to exporters). The proxy points `router_endpoint` at itself and remembers the real router for the token, so
a RouterService.Stream that presents the token can be forwarded to the router the upstream named, and to
nowhere else: a token the upstream never issued is refused. That keeps the proxy from being an open relay.

A response naming the proxy itself as the router (it would relay each Stream to itself, without end) and a
response that does not decode (its router endpoint cannot be pointed at the proxy, and passing it on would send
the peer to the real router around the proxy) are not forwarded: the call fails with `RouteRefused`'s status.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_HANDOUTS
from jsreplay.serving import OwnAddresses

# Methods whose responses carry a router endpoint and token, and the field names that hold them.
ENDPOINT_METHODS = ROUTER_HANDOUTS


@dataclass(frozen=True)
class Rewrite:
    forwarded: bytes  # the message as sent on to the caller
    router_endpoint: str  # the real router it named
    router_token: str


class RouteRefused(Exception):
    """A call the proxy will not forward or finish forwarding; the status the caller gets (and the cassette)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RouterTable:
    """Token -> real router endpoint, filled only from upstream responses; never the proxy itself."""

    def __init__(self, registry: Registry, advertise: str, own: OwnAddresses | None = None) -> None:
        self._registry = registry
        self._advertise = advertise
        self._own = own if own is not None else OwnAddresses(advertise)
        self._routes: dict[str, str] = {}

    async def is_own(self, target: str) -> bool:
        """Whether `target` is the proxy itself (forwarding there would loop)."""
        return await self._own.includes(target)

    def __len__(self) -> int:
        return len(self._routes)

    def lookup(self, token: str) -> str | None:
        return self._routes.get(token)

    async def rewrite(self, method: str, data: bytes) -> Rewrite | None:
        """For Dial/Listen responses: point the router endpoint at the proxy and learn the route.

        Raises RouteRefused for a response that must not reach the peer (see the module docstring)."""
        if method not in ENDPOINT_METHODS:
            return None
        info = self._registry.method(method)
        if info is None:
            return None
        name = method.rpartition("/")[2]
        try:
            message = self._registry.parse(info.response_type, data)
        except ProtocolError as err:
            raise RouteRefused(
                grpc.StatusCode.INTERNAL,
                f"jsreplay: the upstream's {name} response does not decode ({err}); not forwarded, as its router "
                "endpoint cannot be pointed at the proxy",
            ) from None
        endpoint = getattr(message, "router_endpoint", "")
        token = getattr(message, "router_token", "")
        if not endpoint:
            return None  # names no router: nothing to rewrite
        if await self._own.includes(endpoint):
            raise RouteRefused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"jsreplay: the upstream's {name} response names this proxy itself ({endpoint}) as the router; "
                "refusing to route to itself; not forwarded",
            )
        if token:
            self._routes[token] = endpoint
        message.router_endpoint = self._advertise
        return Rewrite(forwarded=message.SerializeToString(), router_endpoint=endpoint, router_token=token)
