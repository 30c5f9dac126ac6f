"""Test support: a fake Jumpstarter cluster and helpers that run the real 0.9.0 client and exporter.

This subpackage needs the real peers (the `demo` extra); the jsreplay core never imports it.
"""

from __future__ import annotations

try:
    import jumpstarter  # noqa: F401
    import jumpstarter_driver_network  # noqa: F401
    import jumpstarter_driver_power  # noqa: F401
    import jumpstarter_protocol  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"jsreplay.testing needs the real Jumpstarter peers ({exc.name} is missing): pip install 'jsreplay[demo]'"
    ) from exc

from jsreplay.testing.cluster import (
    CallError,
    CallRecord,
    ClientCredentials,
    ExporterCredentials,
    ExporterState,
    FakeCluster,
    LeaseState,
    RouterStreamRecord,
)
from jsreplay.testing.peers import (
    ECHO_PAYLOAD,
    DemoRoot,
    RunningExporter,
    ScenarioResult,
    client_config,
    default_drivers,
    leasing,
    run_client_scenario,
    run_exporter,
)

__all__ = [
    "ECHO_PAYLOAD",
    "CallError",
    "CallRecord",
    "ClientCredentials",
    "DemoRoot",
    "ExporterCredentials",
    "ExporterState",
    "FakeCluster",
    "LeaseState",
    "RouterStreamRecord",
    "RunningExporter",
    "ScenarioResult",
    "client_config",
    "default_drivers",
    "leasing",
    "run_client_scenario",
    "run_exporter",
]
