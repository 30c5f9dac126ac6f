"""A frame factory: one direction of an HTTP/2 gRPC connection, built with hyperframe and a real HPACK encoder."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from jsreplay.tunnel import CONNECTION_PREFACE, Direction

Fields = Sequence[tuple[str | bytes, str | bytes]]
C2E = Direction.CLIENT_TO_EXPORTER
E2C = Direction.EXPORTER_TO_CLIENT


def request_fields(path: str = "/jumpstarter.v1.ExporterService/GetReport", *extra: tuple[str, str]) -> Fields:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "exporter"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def response_fields(*extra: tuple[str, str]) -> Fields:
    return [(":status", "200"), ("content-type", "application/grpc"), *extra]


def message(data: bytes, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message."""
    return struct.pack(">BI", int(compressed), len(data)) + data


class Peer:
    """Serializes frames for one direction; HPACK state lives in ``encoder`` as it would in the real sender."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.encoder = hpack.Encoder()

    def start(self, settings: dict[int, int] | None = None) -> bytes:
        """The client's preface, or nothing for the server, then the initial SETTINGS."""
        preface = CONNECTION_PREFACE if self.direction is C2E else b""
        return preface + SettingsFrame(0, settings=settings or {SettingsFrame.MAX_FRAME_SIZE: 16384}).serialize()

    def block(self, fields: Fields) -> bytes:
        return self.encoder.encode(list(fields))

    def headers(
        self,
        stream_id: int,
        fields: Fields,
        *,
        end_stream: bool = False,
        pad: int | None = None,
        priority: int | None = None,
        split: int = 0,
    ) -> bytes:
        """HEADERS, optionally padded, with PRIORITY, and split into ``split`` extra CONTINUATION frames."""
        block = self.block(fields)
        size = -(-len(block) // (split + 1)) if block else 0
        parts = [block[i : i + size] for i in range(0, len(block), size)] if size else [b""]
        parts += [b""] * (split + 1 - len(parts))
        flags = ["END_STREAM"] if end_stream else []
        if not split:
            flags.append("END_HEADERS")
        if pad is not None:
            flags.append("PADDED")
        if priority is not None:
            flags.append("PRIORITY")
        first = HeadersFrame(stream_id, parts[0], flags=flags, pad_length=pad or 0)
        if priority is not None:
            first.depends_on, first.stream_weight = priority, 15
        out = first.serialize()
        for index, part in enumerate(parts[1:], start=1):
            last = index == len(parts) - 1
            out += ContinuationFrame(stream_id, part, flags=["END_HEADERS"] if last else []).serialize()
        return out

    def data(self, stream_id: int, payload: bytes, *, end_stream: bool = False, pad: int | None = None) -> bytes:
        flags = (["END_STREAM"] if end_stream else []) + (["PADDED"] if pad is not None else [])
        return DataFrame(stream_id, payload, flags=flags, pad_length=pad or 0).serialize()

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    @staticmethod
    def goaway(last_stream_id: int, code: int = 0, debug: bytes = b"") -> bytes:
        return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code, additional_data=debug).serialize()

    @staticmethod
    def ping(ack: bool = False) -> bytes:
        return PingFrame(0, b"12345678", flags=["ACK"] if ack else []).serialize()

    @staticmethod
    def window_update(stream_id: int, increment: int = 1000) -> bytes:
        return WindowUpdateFrame(stream_id, window_increment=increment).serialize()

    @staticmethod
    def priority(stream_id: int, depends_on: int = 0) -> bytes:
        return PriorityFrame(stream_id, depends_on=depends_on, stream_weight=7).serialize()

    @staticmethod
    def settings_ack() -> bytes:
        return SettingsFrame(0, flags=["ACK"]).serialize()

    @staticmethod
    def raw(frame_type: int, flags: int, stream_id: int, body: bytes) -> bytes:
        """Any frame, even an invalid one."""
        header = struct.pack(">HBBBI", len(body) >> 8, len(body) & 0xFF, frame_type, flags, stream_id)
        return header + body
