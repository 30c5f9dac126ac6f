"""Fixtures for the tunnel decoder tests: one real grpc capture per test session."""

from __future__ import annotations

import pytest

from .capture import Capture, run_capture


@pytest.fixture(scope="session")
def captured() -> Capture:
    """Real HTTP/2 gRPC bytes of a grpc.aio client and server, recorded by a relay, plus the client's view."""
    return run_capture()
