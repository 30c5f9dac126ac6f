"""What a byte stream inside a tunnel is: its identity, from the `request` metadata the client opens it with.

Drivers decorated with `@exportstream` (a serial port, a network connection, a console) and resources (a file
uploaded to or downloaded from a driver) are carried as nested `jumpstarter.v1.RouterService/Stream` calls inside
the tunnel. Each says what it is in its `request` metadata, a JSON object:

- `{"kind": "driver", "uuid": <driver>, "method": <the stream method, e.g. "connect">}`
- `{"kind": "resource", "uuid": <driver>, "x_jmp_content_encoding": <"gzip", … or null>}`; the exporter answers in
  its initial metadata with `resource: {"kind": "client_stream", "uuid": <a new handle>, …}`, and the client then
  passes that handle to the driver call that reads or writes the resource.

A stream's identity is its kind, its target (the driver, named by its path in the exporter's GetReport tree, such
as `board/console/echo`, so that it is the same in every session although driver UUIDs are new every exporter
run) and its method (a driver stream's method; a resource's content encoding). The bytes a stream carries are the
payloads of its DATA frames (`StreamRequest`/`StreamResponse` with frame type DATA), one byte sequence per
direction whatever the chunking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsreplay.cassette.model import Metadata
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import STREAM_REQUEST, STREAM_RESPONSE, RouterFrameType
from jsreplay.session.drivers import driver_tree

REQUEST_KEY = "request"  # the client's request metadata: what the stream is
RESOURCE_KEY = "resource"  # the exporter's initial metadata on a resource stream: the handle it made
NAME_LABEL = "jumpstarter.dev/name"


@dataclass(frozen=True, order=True)
class StreamIdentity:
    """What a byte stream is: `driver serial.connect`, `resource storage`, `resource storage (gzip)`."""

    kind: str  # "driver", "resource", or what an unknown kind says ("" when the metadata has none)
    target: str  # the driver's path in the tree ("board/console/echo"), else its UUID
    method: str = ""  # a driver stream's method; a resource's content encoding ("" for none)

    def __str__(self) -> str:
        if self.kind == "resource":
            return f"resource {self.target}" + (f" ({self.method})" if self.method else "")
        if self.kind == "driver":
            return f"driver {self.target}.{self.method}"
        return f"stream {self.kind or '?'} {self.target}" + (f" {self.method}" if self.method else "")

    @property
    def path(self) -> str:
        """Where `--ignore` names the stream's bytes: `RouterService/Stream.bytes.driver.serial.connect`."""
        parts = [self.kind or "unknown", self.target] + ([self.method] if self.method else [])
        return "RouterService/Stream.bytes." + ".".join(parts)


def _values(metadata: Metadata) -> dict[str, str]:
    return {k.lower(): v for k, v in metadata if isinstance(v, str)}


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def stream_request(metadata: Metadata) -> dict[str, Any]:
    """The `request` object a byte stream was opened with ({} when it has none)."""
    return _json(_values(metadata).get(REQUEST_KEY))


def resource_handle(initial_metadata: Metadata | None) -> str | None:
    """The handle (UUID) an exporter made for a resource stream, from its initial metadata."""
    if not initial_metadata:
        return None
    handle = _json(_values(initial_metadata).get(RESOURCE_KEY)).get("uuid")
    return handle if isinstance(handle, str) and handle else None


def stream_identity(metadata: Metadata, names: Mapping[str, str]) -> StreamIdentity:
    """A stream's identity from its request metadata; `names`: driver UUID -> path (`driver_paths`)."""
    request = stream_request(metadata)
    kind = str(request.get("kind") or "")
    uuid = str(request.get("uuid") or "")
    target = names.get(uuid, uuid)
    if kind == "resource":
        return StreamIdentity(kind, target, str(request.get("x_jmp_content_encoding") or ""))
    return StreamIdentity(kind, target, str(request.get("method") or ""))


def driver_paths(report: Mapping[str, Any]) -> dict[str, str]:
    """Driver UUID -> its place in the device tree below the root (`board/console/echo`; an unnamed driver is
    `#i`, as `session.drivers` names it), from a decoded GetReportResponse. The root is `(root)`."""
    reports = [r for r in report.get("reports") or () if isinstance(r, Mapping)]
    return {uuid: "/".join(path[1:]) or "(root)" for uuid, path in driver_tree(reports).items()}


def driver_paths_from(registry: Registry, response_type: str, data: bytes) -> dict[str, str]:
    """`driver_paths` of a recorded GetReport response ({} if it does not decode)."""
    try:
        return driver_paths(registry.decode(response_type, data))
    except ProtocolError:
        return {}


def frames(registry: Registry, messages: Iterable[bytes], *, sent_by_client: bool) -> Iterator[tuple[int, bytes]]:
    """(frame type, payload) of a byte stream's messages in one direction (ProtocolError if one does not decode)."""
    cls = registry.message_class(STREAM_REQUEST if sent_by_client else STREAM_RESPONSE)
    for data in messages:
        try:
            message = cls.FromString(data)
        except Exception as err:
            raise ProtocolError(f"a byte stream message does not decode: {err}") from None
        yield int(message.frame_type), bytes(message.payload)


def payload_length(registry: Registry, messages: Iterable[bytes], *, sent_by_client: bool) -> int:
    """How many bytes a direction of a byte stream carried (its DATA payloads)."""
    return sum(len(p) for t, p in frames(registry, messages, sent_by_client=sent_by_client) if t == DATA)


DATA = int(RouterFrameType.DATA)
