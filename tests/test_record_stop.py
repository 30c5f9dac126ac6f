"""Stopping `jsreplay record` (SIGINT, SIGTERM) while the real exporter and client are connected, mid-session."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from jsreplay.testing.stopping import stop_mid_session

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_signal_mid_session_exits_0_and_ends_every_call(tmp_path: Path, signum: int) -> None:
    trial = await stop_mid_session(tmp_path, signum)
    assert trial.ok, (trial.problems, trial.stderr)
    assert trial.stderr.count("jsreplay record:") == 1  # the summary, nothing else
    # The exporter's Status and Listen, both router streams of the tunnel: open when the signal came.
    assert trial.proxy_cancels >= 4, trial
    assert trial.cancel_reasons == {f"jsreplay record stopped ({signal.Signals(signum).name})"}


@pytest.mark.timeout(90)
async def test_exporter_only_and_a_second_ctrl_c(tmp_path: Path) -> None:
    trial = await stop_mid_session(tmp_path, signal.SIGINT, with_client=False, twice=True)
    assert trial.ok, (trial.problems, trial.stderr)
    assert trial.proxy_cancels >= 1, trial  # its Status stream
