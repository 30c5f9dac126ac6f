"""gRPC options every jsreplay server and upstream channel uses with real Jumpstarter peers.

The Jumpstarter client and exporter send an HTTP/2 PING every 20 s, even with no call open (their channels
set keepalive_time 20 s and keepalive_permit_without_calls). A server with gRPC's default policy counts
pings that arrive more often than every 5 minutes without data as "strikes" and, after two, closes the
connection with GOAWAY too_many_pings: an idle router tunnel dies after about a minute. So servers accept
pings at any rate with no strikes. Channels we open ourselves (a proxy's upstream) ping like the peers do,
so an idle upstream connection through a load balancer stays up just as the peers' own would.

Router frames carry chunks of the inner HTTP/2 connection and driver calls can carry files, so messages
are allowed up to 64 MiB instead of gRPC's 4 MiB receive default.
"""

from __future__ import annotations

__all__ = ["CHANNEL_OPTIONS", "MAX_MESSAGE_LENGTH", "SERVER_OPTIONS"]

MAX_MESSAGE_LENGTH = 64 * 1024 * 1024

SERVER_OPTIONS: list[tuple[str, int]] = [
    # Accept keepalive pings with no call open, at any interval, and never punish them.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
    ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
]

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # Same cadence as the real peers' channels, so an upstream sees nothing a peer would not send.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Keep pinging an idle connection (the default stops after two pings without data).
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
    ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
]
