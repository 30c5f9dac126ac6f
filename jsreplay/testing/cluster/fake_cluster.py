"""FakeCluster: the thin owner of a fake cluster. It holds the state, builds the services and the router, and serves
them on two TLS ports (controller + client service on one, router on the other)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

import grpc

from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.testing.cluster.client_service import ClientService
from jsreplay.testing.cluster.controller import ControllerService
from jsreplay.testing.cluster.handlers import Hooks
from jsreplay.testing.cluster.model import (
    CLIENT,
    EXPORTER,
    ROUTER_STREAM,
    AlterResponse,
    BeforeCall,
    CallRecord,
    ClientCredentials,
    ExporterCredentials,
    ExporterState,
    LeaseState,
    RouterStreamRecord,
)
from jsreplay.testing.cluster.router import Router
from jsreplay.testing.cluster.state import ClusterState
from jsreplay.testing.cluster.tokens import new_token
from jsreplay.tls import CertificateAuthority, ServerCertificate, server_credentials


class FakeCluster:
    """Controller, client service and router of a fake Jumpstarter cluster (an async context manager).

    `dial_ready_timeout`: how long Dial waits for the exporter's LEASE_READY before answering
    FAILED_PRECONDITION "exporter not ready" (0 answers at once, like a strict controller).
    `router_pair_timeout`: how long the router holds a caller whose peer has not arrived.
    `router_linger`: when a caller's call ends after it sent GOAWAY, how long its peer may still take to
    half-close before the router ends the peer's call too (a caller that vanishes without GOAWAY ends its
    peer at once).
    `listen_ends_at_lease_end`: when a lease ends (released, deleted, expired, exporter unregistered), end the
    exporter's Listen streams open for it with OK, as a real controller may; a Listen opened for an already
    ended lease still stays open until its caller cancels it. Default False: Listen stays open after the lease
    ends until the exporter cancels it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        dial_ready_timeout: float = 5.0,
        router_pair_timeout: float = 20.0,
        router_linger: float = 10.0,
        router_queue_depth: int = 64,
        listen_ends_at_lease_end: bool = False,
        before_call: BeforeCall | None = None,
        alter_response: AlterResponse | None = None,
    ) -> None:
        self.host = host
        self.ca = CertificateAuthority.generate("jsreplay fake cluster CA")
        self.certificate: ServerCertificate = self.ca.issue([host])
        self.controller_endpoint = ""

        self._state = ClusterState()
        self._hooks = Hooks(before_call, alter_response)
        self._router_service = Router(
            self._state.notify,
            pair_timeout=router_pair_timeout,
            linger=router_linger,
            queue_depth=router_queue_depth,
        )
        self._controller_service = ControllerService(
            self._state,
            self._hooks,
            self._router_service,
            dial_ready_timeout=dial_ready_timeout,
            listen_ends_at_lease_end=listen_ends_at_lease_end,
        )
        self._client_service = ClientService(self._state, self._hooks)
        self._controller_server: grpc.aio.Server | None = None
        self._router_server: grpc.aio.Server | None = None

    # ---- what the tests read: the state's and the router's own records ------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        return self._state.calls

    @property
    def router_streams(self) -> list[RouterStreamRecord]:
        return self._router_service.streams

    @property
    def exporters(self) -> dict[str, ExporterState]:
        """ "ns/name" -> state"""
        return self._state.exporters

    @property
    def leases(self) -> dict[str, LeaseState]:
        """lease name -> state"""
        return self._state.leases

    @property
    def clients(self) -> dict[str, ClientCredentials]:
        """ "ns/name" -> credentials"""
        return self._state.clients

    @property
    def router_endpoint(self) -> str:
        return self._router_service.endpoint

    # ---- settings, kept where the services read them -----------------------------------------------

    @property
    def dial_ready_timeout(self) -> float:
        return self._controller_service.dial_ready_timeout

    @dial_ready_timeout.setter
    def dial_ready_timeout(self, value: float) -> None:
        self._controller_service.dial_ready_timeout = value

    @property
    def listen_ends_at_lease_end(self) -> bool:
        return self._controller_service.listen_ends_at_lease_end

    @listen_ends_at_lease_end.setter
    def listen_ends_at_lease_end(self, value: bool) -> None:
        self._controller_service.listen_ends_at_lease_end = value

    @property
    def router_pair_timeout(self) -> float:
        return self._router_service.pair_timeout

    @router_pair_timeout.setter
    def router_pair_timeout(self, value: float) -> None:
        self._router_service.pair_timeout = value

    @property
    def router_linger(self) -> float:
        return self._router_service.linger

    @router_linger.setter
    def router_linger(self, value: float) -> None:
        self._router_service.linger = value

    @property
    def router_queue_depth(self) -> int:
        return self._router_service.queue_depth

    @router_queue_depth.setter
    def router_queue_depth(self, value: int) -> None:
        self._router_service.queue_depth = value

    @property
    def before_call(self) -> BeforeCall | None:
        return self._hooks.before_call

    @before_call.setter
    def before_call(self, value: BeforeCall | None) -> None:
        self._hooks.before_call = value

    @property
    def alter_response(self) -> AlterResponse | None:
        return self._hooks.alter_response

    @alter_response.setter
    def alter_response(self, value: AlterResponse | None) -> None:
        self._hooks.alter_response = value

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    async def __aenter__(self) -> Self:
        self._state.start()  # bind to the running loop
        creds = server_credentials(self.certificate)
        self._controller_server = grpc.aio.server(options=SERVER_OPTIONS)
        self._controller_server.add_generic_rpc_handlers(
            [self._controller_service.handlers(), self._client_service.handlers()]
        )
        port = self._controller_server.add_secure_port(f"{self.host}:0", creds)
        self.controller_endpoint = f"{self.host}:{port}"
        self._router_server = grpc.aio.server(options=SERVER_OPTIONS)
        self._router_server.add_generic_rpc_handlers([self._router_service.handlers()])
        port = self._router_server.add_secure_port(f"{self.host}:0", creds)
        self._router_service.endpoint = f"{self.host}:{port}"
        await self._controller_server.start()
        await self._router_server.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for lease in self.leases.values():
            if lease.expiry is not None:
                lease.expiry.cancel()
        # Open streams (an exporter still running, a tunnel) are cancelled after a short grace.
        servers = [s for s in (self._router_server, self._controller_server) if s is not None]
        await asyncio.gather(*(s.stop(grace=0.5) for s in servers))
        self._router_server = self._controller_server = None

    # ---- credentials -------------------------------------------------------------------------------

    def new_exporter(
        self, name: str, labels: Mapping[str, str] | None = None, namespace: str = "default"
    ) -> ExporterCredentials:
        """Define an exporter (labels live on the cluster side, as on a real one) and return its credentials."""
        key = f"{namespace}/{name}"
        if key in self.exporters:
            raise ValueError(f"exporter {key} already exists")
        token = new_token()
        self.exporters[key] = ExporterState(namespace=namespace, name=name, token=token, labels=dict(labels or {}))
        self._state.identities[token] = (EXPORTER, namespace, name)
        return ExporterCredentials(
            namespace=namespace,
            name=name,
            token=token,
            endpoint=self.controller_endpoint,
            ca_pem=self.ca_pem,
            labels=dict(labels or {}),
        )

    def new_client(self, name: str, namespace: str = "default") -> ClientCredentials:
        key = f"{namespace}/{name}"
        if key in self.clients:
            raise ValueError(f"client {key} already exists")
        token = new_token()
        creds = ClientCredentials(
            namespace=namespace, name=name, token=token, endpoint=self.controller_endpoint, ca_pem=self.ca_pem
        )
        self.clients[key] = creds
        self._state.identities[token] = (CLIENT, namespace, name)
        return creds

    def new_router_token(self, lease_name: str = "") -> str:
        """A token the router will pair on (what Dial hands out); for tests of the router alone."""
        return self._router_service.new_token(lease_name)

    # ---- inspection helpers for tests ---------------------------------------------------------------

    def exporter(self, name: str, namespace: str = "default") -> ExporterState:
        return self._state.exporter(name, namespace)

    def call_counts(self) -> Counter[str]:
        """Calls per full method path; RouterService.Stream counts every caller."""
        counts = Counter(c.method for c in self.calls)
        counts[ROUTER_STREAM] += len(self.router_streams)
        return counts

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait until `predicate()` holds; re-checked on every state change. TimeoutError names `what`."""
        await self._state.wait_for(predicate, timeout, what)

    async def wait_exporter_available(self, name: str, namespace: str = "default", timeout: float = 10.0) -> None:
        state = self.exporter(name, namespace)
        await self.wait_for(lambda: state.available, timeout, f"exporter {namespace}/{name} to be available")
