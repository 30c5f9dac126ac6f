"""Record the real scenario through `jsreplay record` against a fake cluster: the source of test cassettes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from jumpstarter.driver import Driver

from jsreplay.record import recording
from jsreplay.record.elision import DEFAULT_HOLD_BYTES, DEFAULT_THRESHOLD
from jsreplay.testing.cluster import FakeCluster
from jsreplay.testing.peers import ScenarioResult, default_drivers, run_client_scenario, run_exporter

LABELS = {"example.com/board": "demo", "jsreplay.dev/test": "fake-cluster"}
SELECTOR = "example.com/board=demo"
SCENARIO_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class RecordedRun:
    cassette: Path
    result: ScenarioResult | Any  # what `client_side` returned, when given
    cluster_calls: dict[str, int]  # method -> how many calls the cluster served
    secrets: tuple[str, ...]  # every bearer and router token the run used: none may reach the cassette


async def record_scenario(
    cassette: Path,
    *,
    cluster_kwargs: Mapping[str, Any] | None = None,
    drivers: Callable[[], Driver] = default_drivers,
    exporter_name: str = "exporter-1",
    client_name: str = "alice",
    labels: Mapping[str, str] = LABELS,
    selector: str = SELECTOR,
    redact: bool = True,
    client_side: Callable[..., Awaitable[Any]] | None = None,
    schema: bytes | None = None,
    elide_above: int | None = DEFAULT_THRESHOLD,
    elision_hold_bytes: int = DEFAULT_HOLD_BYTES,
) -> RecordedRun:
    """Run the full real-client scenario with both peers going through one recording proxy.

    `client_side`: another client side, called as `run_client_scenario` is (endpoint, token, ca_pem, name=,
    selector=), e.g. `jsreplay.testing.drivers.DriverScenario.client()`; its return value is `result`.
    `schema`: the descriptor set to record with (`jsreplay.protocol.schemas.load_schema("v0.9.0")`); default union.
    `elide_above`: uploads above this many bytes are kept as length and SHA-256 (None: keep everything);
    `elision_hold_bytes`: how much recording may be held back while a stream's fate is open.
    """
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with FakeCluster(**(cluster_kwargs or {})) as cluster:
            async with recording(
                upstream=cluster.controller_endpoint,
                upstream_ca=cluster.ca_pem,
                cassette=cassette,
                redact=redact,
                schema=schema,
                elide_above=elide_above,
                elision_hold_bytes=elision_hold_bytes,
            ) as proxy:
                exporter = cluster.new_exporter(exporter_name, dict(labels))
                client = cluster.new_client(client_name)
                async with run_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name, drivers=drivers):
                    await cluster.wait_exporter_available(exporter.name)
                    result = await (client_side or run_client_scenario)(
                        proxy.endpoint, client.token, proxy.ca_pem, name=client.name, selector=selector
                    )
                    await cluster.wait_exporter_available(exporter.name)
            router_tokens = [
                str(getattr(m, "router_token", ""))
                for call in cluster.calls
                if call.method.endswith(("/Dial", "/Listen"))
                for m in call.responses
            ]
            return RecordedRun(
                cassette=cassette,
                result=result,
                cluster_calls=dict(cluster.call_counts()),
                secrets=tuple(t for t in (exporter.token, client.token, *router_tokens) if t),
            )
