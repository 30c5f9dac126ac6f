"""The ClientService servicer: CreateLease, GetLease, DeleteLease, ListLeases, GetExporter, ListExporters, and the
Lease and Exporter messages (with the lease conditions the real client reads) they answer with."""

from __future__ import annotations

import datetime
import time
import uuid

import grpc
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message
from jumpstarter_protocol import client_pb2, kubernetes_pb2
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

from jsreplay.testing.cluster.handlers import Service
from jsreplay.testing.cluster.model import CLIENT, CLIENT_SERVICE, CallError, ExporterState, LeaseState
from jsreplay.testing.cluster.selector import parse_selector, selector_matches


class ClientService(Service):
    """What a client asks about leases and exporters; every answer comes from the cluster's state."""

    def handlers(self) -> grpc.GenericRpcHandler:
        pb = client_pb2
        s = f"/{CLIENT_SERVICE}/"
        handlers = {
            "GetExporter": self._unary(
                s + "GetExporter", CLIENT, self._get_exporter, pb.GetExporterRequest, pb.Exporter
            ),
            "ListExporters": self._unary(
                s + "ListExporters", CLIENT, self._list_exporters, pb.ListExportersRequest, pb.ListExportersResponse
            ),
            "GetLease": self._unary(s + "GetLease", CLIENT, self._get_lease, pb.GetLeaseRequest, pb.Lease),
            "ListLeases": self._unary(
                s + "ListLeases", CLIENT, self._list_leases, pb.ListLeasesRequest, pb.ListLeasesResponse
            ),
            "CreateLease": self._unary(s + "CreateLease", CLIENT, self._create_lease, pb.CreateLeaseRequest, pb.Lease),
            "DeleteLease": self._unary(
                s + "DeleteLease", CLIENT, self._delete_lease, pb.DeleteLeaseRequest, empty_pb2.Empty
            ),
        }
        return grpc.method_handlers_generic_handler(CLIENT_SERVICE, handlers)

    async def _create_lease(self, request: client_pb2.CreateLeaseRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        spec = request.lease
        if not spec.HasField("duration") or spec.duration.ToTimedelta().total_seconds() <= 0:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "lease duration is required")
        try:
            parse_selector(spec.selector)
        except ValueError as e:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        lease_name = request.lease_id or str(uuid.uuid4())
        if lease_name in self.state.leases:
            raise CallError(grpc.StatusCode.ALREADY_EXISTS, f"lease {lease_name} already exists")
        lease = LeaseState(
            name=lease_name,
            namespace=ns,
            client=name,
            selector=spec.selector,
            duration=spec.duration.ToTimedelta().total_seconds(),
            requested_exporter=spec.exporter_name,
            tags=dict(spec.tags),
            created=time.time(),
        )
        self.state.leases[lease_name] = lease
        self.state.schedule()
        return self._lease_message(lease)

    async def _get_lease(self, request: client_pb2.GetLeaseRequest, ns: str, name: str) -> Message:
        return self._lease_message(self.state.client_lease(_parse_name(request.name, "leases", ns), ns, name))

    async def _delete_lease(self, request: client_pb2.DeleteLeaseRequest, ns: str, name: str) -> Message:
        lease = self.state.client_lease(_parse_name(request.name, "leases", ns), ns, name)
        if not lease.ended:
            self.state.release(lease, "Released")
        return empty_pb2.Empty()

    async def _list_leases(self, request: client_pb2.ListLeasesRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        only_active = request.only_active if request.HasField("only_active") else True
        leases = [
            self._lease_message(lease)
            for lease in self.state.leases.values()
            if lease.namespace == ns and not (only_active and lease.ended)
        ]
        return client_pb2.ListLeasesResponse(leases=leases)

    async def _get_exporter(self, request: client_pb2.GetExporterRequest, ns: str, name: str) -> Message:
        key = f"{ns}/{_parse_name(request.name, 'exporters', ns)}"
        if key not in self.state.exporters:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"exporter {request.name} not found")
        return self._exporter_message(self.state.exporters[key])

    async def _list_exporters(self, request: client_pb2.ListExportersRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        try:
            selector = parse_selector(request.filter)
        except ValueError as e:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        exporters = [
            self._exporter_message(e)
            for e in self.state.exporters.values()
            if e.namespace == ns and selector_matches(selector, e.effective_labels)
        ]
        return client_pb2.ListExportersResponse(exporters=exporters)

    # ---- messages -----------------------------------------------------------------------------------

    def _conditions(self, lease: LeaseState) -> list[kubernetes_pb2.Condition]:
        def cond(kind: str, status: bool, reason: str, message: str = "") -> kubernetes_pb2.Condition:
            return kubernetes_pb2.Condition(
                type=kind,
                status="True" if status else "False",
                observedGeneration=1,
                lastTransitionTime=kubernetes_pb2.Time(seconds=int(lease.created)),
                reason=reason,
                message=message,
            )

        if lease.ended:
            return [cond("Ready", False, lease.end_reason)]
        if lease.exporter is not None:
            return [cond("Pending", False, "Ready"), cond("Ready", True, "Ready")]
        if not any(self.state.matches(lease, e) for e in self.state.exporters.values()):
            message = f"no exporter matches selector {lease.selector!r}"
            return [cond("Unsatisfiable", True, "NoMatch", message), cond("Ready", False, "Unsatisfiable")]
        return [cond("Pending", True, "Pending", "waiting for a matching exporter"), cond("Ready", False, "Pending")]

    def _lease_message(self, lease: LeaseState) -> client_pb2.Lease:
        message = client_pb2.Lease(
            name=lease.object_name,
            selector=lease.selector,
            duration=duration_pb2.Duration(seconds=int(lease.duration), nanos=int(lease.duration % 1 * 1e9)),
            client=f"namespaces/{lease.namespace}/clients/{lease.client}",
            conditions=self._conditions(lease),
            exporter_name=lease.requested_exporter,
            tags=lease.tags,
        )
        if lease.exporter is not None:
            message.exporter = lease.exporter.object_name
        if lease.begin is not None:
            message.effective_begin_time.CopyFrom(_timestamp(lease.begin))
        if lease.end is not None:
            message.effective_end_time.CopyFrom(_timestamp(lease.end))
            if lease.begin is not None:
                message.effective_duration.FromTimedelta(_seconds(lease.end - lease.begin))
        return message

    def _exporter_message(self, exp: ExporterState) -> client_pb2.Exporter:
        return client_pb2.Exporter(
            name=exp.object_name,
            labels=exp.effective_labels,
            online=exp.online,
            status=exp.status if exp.online else common_pb2.EXPORTER_STATUS_OFFLINE,
            status_message=exp.status_message,
        )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def _check_parent(parent: str, namespace: str) -> None:
    if parent != f"namespaces/{namespace}":
        raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"parent {parent!r} is not your namespace")


def _parse_name(full_name: str, kind: str, namespace: str) -> str:
    parts = full_name.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != kind:
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {kind} name {full_name!r}")
    if parts[1] != namespace:
        raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"{full_name} is not in your namespace")
    return parts[3]
