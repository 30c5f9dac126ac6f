"""The cluster's state and its lease scheduler: exporters, clients, leases, assignment, release, status pushes.

The services read and change this state; every change is announced (`notify`) so `wait_for` re-checks.
Everything runs on the asyncio loop that entered the cluster; state is only touched from that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from jumpstarter_protocol import jumpstarter_pb2

from jsreplay.testing.cluster.model import CallError, CallRecord, ClientCredentials, ExporterState, LeaseState
from jsreplay.testing.cluster.selector import parse_selector, selector_matches


class ClusterState:
    """Exporters, clients and leases of the fake cluster, the calls it answered, and the lease scheduler."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.exporters: dict[str, ExporterState] = {}  # "ns/name" -> state
        self.leases: dict[str, LeaseState] = {}  # lease name -> state
        self.clients: dict[str, ClientCredentials] = {}  # "ns/name" -> credentials
        self.identities: dict[str, tuple[str, str, str]] = {}  # token -> (kind, namespace, name)
        self._changed = asyncio.Event()

    def start(self) -> None:
        """Bind change notification to the running loop."""
        self._changed = asyncio.Event()

    def exporter(self, name: str, namespace: str = "default") -> ExporterState:
        return self.exporters[f"{namespace}/{name}"]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float | None = 10.0, what: str = "condition"
    ) -> None:
        """Wait until `predicate()` holds; re-checked on every state change. TimeoutError names `what`.

        `timeout=None` waits for as long as the caller does (a stream handler, until its call ends)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"fake cluster: timed out after {timeout}s waiting for {what}") from None

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- lease bookkeeping --------------------------------------------------------------------------

    def client_lease(self, lease_name: str, ns: str, client: str) -> LeaseState:
        lease = self.leases.get(lease_name)
        if lease is None or lease.namespace != ns:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"lease {lease_name} not found")
        if lease.client != client:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"permission denied: lease {lease_name} is not yours")
        return lease

    def matches(self, lease: LeaseState, exp: ExporterState) -> bool:
        if exp.namespace != lease.namespace:
            return False
        if lease.requested_exporter and lease.requested_exporter not in (exp.name, exp.object_name):
            return False
        return selector_matches(parse_selector(lease.selector), exp.effective_labels)

    def schedule(self) -> None:
        """Give every waiting lease (oldest first) to an available matching exporter."""
        for lease in sorted(self.leases.values(), key=lambda x: x.created):
            if lease.ended or lease.exporter is not None:
                continue
            for exp in self.exporters.values():
                if exp.available and self.matches(lease, exp):
                    self._assign(lease, exp)
                    break

    def _assign(self, lease: LeaseState, exp: ExporterState) -> None:
        lease.exporter = exp
        lease.begin = time.time()
        exp.lease = lease
        exp.ready_lease = None
        exp.lease_history.append(lease.name)
        lease.expiry = asyncio.get_running_loop().call_later(lease.duration, self.release, lease, "Expired")
        self._push_status(exp)
        self.notify()

    def release(self, lease: LeaseState, reason: str) -> None:
        if lease.ended:
            return
        lease.end = time.time()
        lease.end_reason = reason
        if lease.expiry is not None:
            lease.expiry.cancel()
            lease.expiry = None
        exp = lease.exporter
        if exp is not None and exp.lease is lease:
            exp.lease = None
            exp.ready_lease = None
            self._push_status(exp)
        self.notify()

    def _push_status(self, exp: ExporterState) -> None:
        message = self.status_message(exp)
        for queue in exp.status_streams:
            queue.put_nowait(message)

    def status_message(self, exp: ExporterState) -> jumpstarter_pb2.StatusResponse:
        if exp.lease is None:
            return jumpstarter_pb2.StatusResponse(leased=False)
        return jumpstarter_pb2.StatusResponse(leased=True, lease_name=exp.lease.name, client_name=exp.lease.client)
