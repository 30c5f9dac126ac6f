"""Running the recording proxy from the command line until SIGINT/SIGTERM, with a live status line: what
`jsreplay record` and `jsreplay replay --mode once/all` (which records instead of replaying) both run."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from jsreplay.cli.progress import StatusLine, human_bytes
from jsreplay.record import RecordConfig, RecordingProxy
from jsreplay.record.proxy import STOP_REASON
from jsreplay.serving import parse_hostport

REACHABILITY_TIMEOUT_S = 3.0


async def _warn_if_unreachable(upstream: str) -> None:
    address = parse_hostport(upstream, what="--upstream")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), REACHABILITY_TIMEOUT_S)
        writer.close()
    except (OSError, TimeoutError) as err:
        click.echo(
            f"jsreplay: warning: upstream {upstream} is not reachable now ({err or 'timed out'}); "
            "calls will fail with UNAVAILABLE until it is",
            err=True,
        )


async def run_until_stopped(config: RecordConfig) -> RecordingProxy:
    """Record until SIGINT or SIGTERM; a second signal cuts the stop's grace for unary calls short."""
    stop = asyncio.Event()
    received: list[str] = []
    proxy = RecordingProxy(config)

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        if stop.is_set():
            proxy.hurry()
        stop.set()

    # Before anything starts, so that a signal during start-up also ends in an orderly stop.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    status = StatusLine()
    try:
        await proxy.start()
        trust = "plaintext" if config.tls.plaintext else f"CA file {proxy.ca_file}"
        click.echo(f"jsreplay record: listening on {proxy.endpoint} ({trust}), recording to {config.cassette}")
        sys.stdout.flush()
        if not stop.is_set():
            await _warn_if_unreachable(config.upstream)
        while not stop.is_set():
            stats = proxy.stats
            status.show(
                f"{stats.calls} calls, {stats.open_streams} open streams, {stats.events} events, "
                f"{human_bytes(proxy.bytes_written)} written"
            )
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        status.clear()
        why = f" ({received[0]})" if received else ""
        try:
            await proxy.stop(reason=f"{STOP_REASON}{why}")
        finally:
            # Stopped: from here the process only reports and exits. Another signal must not interrupt that
            # (after the loop is gone it would raise KeyboardInterrupt, or during interpreter shutdown kill the
            # process); ignored handlers are also the ones Python leaves in place while it finalizes.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)
    return proxy
