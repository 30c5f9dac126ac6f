"""A fake Jumpstarter cluster: controller + client service on one TLS port, router on another.

It keeps real lease bookkeeping, so the real 0.9.0 client and exporter run against it unchanged:

- exporters Register, open Status (the cluster pushes leased / not leased), open Listen for their lease
  (one message per Dial), ReportStatus, Unregister;
- clients CreateLease (selector matched against exporter labels), poll GetLease (conditions in the shape
  the real client reads: Ready, Pending, Unsatisfiable), Dial (FAILED_PRECONDITION "exporter not ready"
  until the exporter reported LEASE_READY), DeleteLease; GetExporter, ListExporters, ListLeases answer
  from the same state;
- every call is authenticated with the per-client or per-exporter bearer token the cluster issued;
- the router pipes the two callers that present the same router token (random per Dial) into each other,
  frame by frame, whichever arrives first. A server cannot half-close a response stream, so each side's
  call ends once both sides half-closed; when one side's call goes away, the other is ended too (after a
  bounded linger if the gone side had sent GOAWAY, since its peer then ends by itself).

A lease is assigned the moment it is created if a matching exporter is available, so the client's first
GetLease already sees Ready=True and never sleeps in its 5 s poll loop; Dial waits (bounded) for the
exporter's LEASE_READY instead of bouncing the client into its retry back-off. Both keep a scenario fast.


Where each part lives:

- `model`: service names, hook types, CallError, credentials, ExporterState, LeaseState, call records;
- `state`: the cluster's state and lease scheduler (assignment, release, status pushes, change notification);
- `handlers`: what every controller and client-service call goes through (authentication, hooks, records);
- `controller`: the ControllerService servicer (exporter side, and Dial);
- `client_service`: the ClientService servicer (leases and exporters, as the client sees them);
- `router`: the RouterService (pairing by token, the pipes);
- `selector`, `tokens`: label selectors; issuing and reading bearer tokens;
- `fake_cluster`: FakeCluster, which owns the state, wires the services and serves them over TLS.

Everything runs on the asyncio loop that entered the cluster; state is only touched from that loop.
"""

from __future__ import annotations

from jsreplay.testing.cluster.fake_cluster import FakeCluster
from jsreplay.testing.cluster.model import (
    CLIENT_SERVICE,
    CONTROLLER_SERVICE,
    ROUTER_SERVICE,
    ROUTER_STREAM,
    AlterResponse,
    BeforeCall,
    CallError,
    CallRecord,
    ClientCredentials,
    ExporterCredentials,
    ExporterState,
    LeaseState,
    RouterStreamRecord,
)

__all__ = [
    "CLIENT_SERVICE",
    "CONTROLLER_SERVICE",
    "ROUTER_SERVICE",
    "ROUTER_STREAM",
    "AlterResponse",
    "BeforeCall",
    "CallError",
    "CallRecord",
    "ClientCredentials",
    "ExporterCredentials",
    "ExporterState",
    "FakeCluster",
    "LeaseState",
    "RouterStreamRecord",
]
