"""`grpc.health.v1` and server reflection on the replay server, as the real controller serves them, so grpcurl and
health checks work against replay: reflection describes the schema embedded in the cassettes it serves."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from jsreplay.cassette.model import Header


def schema_pool(headers: Iterable[Header]) -> tuple[descriptor_pool.DescriptorPool, list[str]]:
    """A descriptor pool of the cassettes' schemas (the first cassette wins a file both define) plus the health and
    reflection protos, and the services the cassettes define."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    services: list[str] = []
    pending: list[descriptor_pb2.FileDescriptorProto] = []
    for header in headers:
        files = descriptor_pb2.FileDescriptorSet.FromString(header.descriptor_set).file
        pending.extend(f for f in files if f.name not in added)
        added.update(f.name for f in files)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if proto.name not in added:
            pending.append(proto)
            added.add(proto.name)
    # Dependencies first: add what can be added until nothing more can (a file set is usually in order already).
    while pending:
        left: list[descriptor_pb2.FileDescriptorProto] = []
        for proto in pending:
            try:
                pool.Add(proto)
            except TypeError:
                left.append(proto)
                continue
            services.extend(f"{proto.package}.{s.name}" if proto.package else s.name for s in proto.service)
        if len(left) == len(pending):
            break  # a file whose dependencies are missing: reflection cannot describe it
        pending = left
    return pool, services


async def add_introspection(server: grpc.aio.Server, headers: Iterable[Header]) -> health.aio.HealthServicer:
    """Serve health (SERVING for "" and every service) and reflection; call before the replay's own handler."""
    pool, services = schema_pool(headers)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = sorted(set(services) | {health.SERVICE_NAME, reflection.SERVICE_NAME})
    reflection.enable_server_reflection(names, server, pool=pool)
    for name in ("", *names):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer
