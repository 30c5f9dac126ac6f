"""The ControllerService servicer: the exporter's side (Register, Unregister, ReportStatus, ReleaseLease, Status,
Listen) and the client's Dial, which hands both peers a router token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message
from jumpstarter_protocol import jumpstarter_pb2
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

from jsreplay.testing.cluster.handlers import Hooks, Service
from jsreplay.testing.cluster.model import CLIENT, CONTROLLER_SERVICE, EXPORTER, CallError
from jsreplay.testing.cluster.router import Router
from jsreplay.testing.cluster.state import ClusterState


class ControllerService(Service):
    """`dial_ready_timeout`, `listen_ends_at_lease_end`: see FakeCluster."""

    def __init__(
        self,
        state: ClusterState,
        hooks: Hooks,
        router: Router,
        *,
        dial_ready_timeout: float,
        listen_ends_at_lease_end: bool = False,
    ) -> None:
        super().__init__(state, hooks)
        self.router = router
        self.dial_ready_timeout = dial_ready_timeout
        self.listen_ends_at_lease_end = listen_ends_at_lease_end

    def handlers(self) -> grpc.GenericRpcHandler:
        pb = jumpstarter_pb2
        s = f"/{CONTROLLER_SERVICE}/"
        handlers = {
            "Register": self._unary(s + "Register", EXPORTER, self._register, pb.RegisterRequest, pb.RegisterResponse),
            "Unregister": self._unary(
                s + "Unregister", EXPORTER, self._unregister, pb.UnregisterRequest, pb.UnregisterResponse
            ),
            "ReportStatus": self._unary(
                s + "ReportStatus", EXPORTER, self._report_status, pb.ReportStatusRequest, pb.ReportStatusResponse
            ),
            "ReleaseLease": self._unary(
                s + "ReleaseLease", EXPORTER, self._release_lease, pb.ReleaseLeaseRequest, pb.ReleaseLeaseResponse
            ),
            "Status": self._server_stream(s + "Status", EXPORTER, self._status, pb.StatusRequest, pb.StatusResponse),
            "Listen": self._server_stream(s + "Listen", EXPORTER, self._listen, pb.ListenRequest, pb.ListenResponse),
            "Dial": self._unary(s + "Dial", CLIENT, self._dial, pb.DialRequest, pb.DialResponse),
        }
        return grpc.method_handlers_generic_handler(CONTROLLER_SERVICE, handlers)

    async def _register(self, request: jumpstarter_pb2.RegisterRequest, ns: str, name: str) -> Message:
        exp = self.state.exporter(name, ns)
        exp.registered = True
        exp.unregistered = False
        exp.register_count += 1
        exp.registered_labels = dict(request.labels)
        exp.reports = list(request.reports)
        self.state.schedule()
        return jumpstarter_pb2.RegisterResponse(uuid=exp.uid)

    async def _unregister(self, request: jumpstarter_pb2.UnregisterRequest, ns: str, name: str) -> Message:
        exp = self.state.exporter(name, ns)
        exp.registered = False
        exp.unregistered = True
        exp.unregister_reason = request.reason
        if exp.lease is not None:
            self.state.release(exp.lease, "ExporterUnregistered")
        return jumpstarter_pb2.UnregisterResponse()

    async def _report_status(self, request: jumpstarter_pb2.ReportStatusRequest, ns: str, name: str) -> Message:
        exp = self.state.exporter(name, ns)
        exp.status = request.status
        exp.status_message = request.message
        exp.status_history.append(request.status)
        if exp.lease is not None:
            if request.status == common_pb2.EXPORTER_STATUS_LEASE_READY:
                exp.ready_lease = exp.lease.name
            if request.HasField("release_lease") and request.release_lease:
                self.state.release(exp.lease, "Released")
        self.state.schedule()
        return jumpstarter_pb2.ReportStatusResponse()

    async def _release_lease(self, request: jumpstarter_pb2.ReleaseLeaseRequest, ns: str, name: str) -> Message:
        exp = self.state.exporter(name, ns)
        lease = self.state.leases.get(request.name)
        if lease is None or lease.exporter is not exp:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"lease {request.name} is not held by this exporter")
        if not lease.ended:
            self.state.release(lease, "Released")
        return jumpstarter_pb2.ReleaseLeaseResponse()

    async def _status(
        self, request: jumpstarter_pb2.StatusRequest, ns: str, name: str
    ) -> AsyncIterator[jumpstarter_pb2.StatusResponse]:
        exp = self.state.exporter(name, ns)
        queue: asyncio.Queue[jumpstarter_pb2.StatusResponse] = asyncio.Queue()
        queue.put_nowait(self.state.status_message(exp))  # the current state first, then every transition
        exp.status_streams.add(queue)
        self.state.schedule()
        self.state.notify()
        try:
            while True:
                yield await queue.get()
        finally:
            exp.status_streams.discard(queue)
            self.state.notify()

    async def _listen(
        self, request: jumpstarter_pb2.ListenRequest, ns: str, name: str
    ) -> AsyncIterator[jumpstarter_pb2.ListenResponse]:
        exp = self.state.exporter(name, ns)
        lease = self.state.leases.get(request.lease_name)
        if lease is None or lease.name not in exp.lease_history:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"lease {request.lease_name} is not assigned to you")
        # Stays open after the lease ends: the exporter cancels it itself, and ending it would make the real
        # exporter re-open it in a loop. With listen_ends_at_lease_end, a Listen open when its lease ends ends
        # then with OK (what is queued first); one opened after the end (the 0.9.0 exporter re-opens an ended
        # Listen at once) stays open, so the exporter does not spin until it notices the lease is gone.
        if not (self.listen_ends_at_lease_end and not lease.ended):
            while True:
                yield await lease.listen.get()
        while True:
            await self.state.wait_for(lambda: lease.ended or not lease.listen.empty(), None, "a Dial or lease end")
            if lease.listen.empty():
                return  # the lease ended: the stream ends with OK
            yield lease.listen.get_nowait()

    async def _dial(self, request: jumpstarter_pb2.DialRequest, ns: str, name: str) -> Message:
        lease = self.state.client_lease(request.lease_name, ns, name)

        def ready() -> bool:
            return lease.ended or (lease.exporter is not None and lease.exporter.ready_lease == lease.name)

        with contextlib.suppress(TimeoutError):
            await self.state.wait_for(ready, self.dial_ready_timeout)
        if lease.ended:
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, f"lease {lease.name} has ended")
        if not ready():
            # The wording matters: the real client retries Dial only on FAILED_PRECONDITION + "not ready".
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, "exporter not ready")
        token = self.router.new_token(lease.name)
        lease.dials += 1
        endpoint = self.router.endpoint
        lease.listen.put_nowait(jumpstarter_pb2.ListenResponse(router_endpoint=endpoint, router_token=token))
        return jumpstarter_pb2.DialResponse(router_endpoint=endpoint, router_token=token)
