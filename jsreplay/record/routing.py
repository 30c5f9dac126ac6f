"""Routing router streams through the proxy: rewrite `router_endpoint`, remember which router owns each token.

The controller hands out `{router_endpoint, router_token}` in Dial responses (to clients) and Listen messages
(to exporters). The proxy points `router_endpoint` at itself and remembers the real router for the token, so
a RouterService.Stream that presents the token can be forwarded to the router the upstream named, and to
nowhere else: a token the upstream never issued is refused. That keeps the proxy from being an open relay.

A response naming the proxy itself as the router (it would relay each Stream to itself, without end) and a
response that does not decode (its router endpoint cannot be pointed at the proxy, and passing it on would send
the peer to the real router around the proxy) are not forwarded: the call fails with `RouteRefused`'s status.

Telemetry (the development line) works the same way: `GetServiceEndpoints` responses name telemetry endpoints
(`TelemetryEndpoint{endpoint, certificate}`); the proxy points each at itself (and its certificate at the proxy's
CA, or none when it listens in plaintext) and remembers the first, which is the one the exporter uses, under the
caller's bearer token: the exporter sends its own token on `TelemetryService/PushLogs`, the only thing that says
which endpoint it means. A PushLogs with a token no GetServiceEndpoints caller presented is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import GET_SERVICE_ENDPOINTS, ROUTER_HANDOUTS
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

    def __init__(
        self, registry: Registry, advertise: str, own: OwnAddresses | None = None, ca_pem: bytes | None = None
    ) -> None:
        self._registry = registry
        self._advertise = advertise
        self._own = own if own is not None else OwnAddresses(advertise)
        self._ca_pem = ca_pem  # the proxy's CA, handed out as telemetry endpoints' certificate
        self._routes: dict[str, str] = {}
        self._telemetry: dict[str, str] = {}  # bearer token of a GetServiceEndpoints caller -> its endpoint
        self._telemetry_ca: dict[str, bytes] = {}  # telemetry endpoint -> the CA the upstream named for it

    async def is_own(self, target: str) -> bool:
        """Whether `target` is the proxy itself (forwarding there would loop)."""
        return await self._own.includes(target)

    def __len__(self) -> int:
        return len(self._routes)

    def lookup(self, token: str) -> str | None:
        return self._routes.get(token)

    def telemetry(self, token: str) -> str | None:
        """The telemetry endpoint the upstream named to the caller presenting `token`."""
        return self._telemetry.get(token)

    def telemetry_ca(self, endpoint: str) -> bytes | None:
        """The CA certificate the upstream named for a telemetry endpoint (None: trust it as the upstream)."""
        return self._telemetry_ca.get(endpoint)

    def _parse(self, method: str, data: bytes, what: str) -> Any:
        """A response naming endpoints, decoded; None for a method the schema lacks. One that does not decode
        is refused: forwarded, it would send the peer around the proxy."""
        info = self._registry.method(method)
        if info is None:
            return None
        try:
            return self._registry.parse(info.response_type, data)
        except ProtocolError as err:
            raise RouteRefused(
                grpc.StatusCode.INTERNAL,
                f"jsreplay: the upstream's {method.rpartition('/')[2]} response does not decode ({err}); not "
                f"forwarded, as {what} cannot be pointed at the proxy",
            ) from None

    async def _rewrite_telemetry(self, data: bytes, caller_token: str | None) -> Rewrite | None:
        message = self._parse(GET_SERVICE_ENDPOINTS, data, "its telemetry endpoints")
        if message is None:
            return None
        endpoints = list(getattr(message, "telemetry_endpoints", ()))
        if not endpoints:
            return None
        for item in endpoints:
            if item.endpoint and await self._own.includes(item.endpoint):
                raise RouteRefused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"jsreplay: the upstream's GetServiceEndpoints response names this proxy itself ({item.endpoint})"
                    " as a telemetry endpoint; refusing to route to itself; not forwarded",
                )
        first = endpoints[0].endpoint
        if first and endpoints[0].certificate:
            self._telemetry_ca[first] = endpoints[0].certificate.encode()
        if first and caller_token:
            self._telemetry[caller_token] = first
        for item in endpoints:
            if item.endpoint:
                item.endpoint = self._advertise
                item.certificate = self._ca_pem.decode() if self._ca_pem else ""
        return Rewrite(forwarded=message.SerializeToString(), router_endpoint=first, router_token="")

    async def rewrite(self, method: str, data: bytes, caller_token: str | None = None) -> Rewrite | None:
        """For Dial/Listen responses: point the router endpoint at the proxy and learn the route; the same for
        GetServiceEndpoints' telemetry endpoints, learnt under `caller_token`.

        Raises RouteRefused for a response that must not reach the peer (see the module docstring)."""
        if method == GET_SERVICE_ENDPOINTS:
            return await self._rewrite_telemetry(data, caller_token)
        if method not in ENDPOINT_METHODS:
            return None
        name = method.rpartition("/")[2]
        message = self._parse(method, data, "its router endpoint")
        if message is None:
            return None
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
