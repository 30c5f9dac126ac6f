"""`jsreplay replay`: serve cassettes as controller, client service, router and exporter."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from jsreplay.cli.main import EXIT_DIFFERENT, EXIT_ERROR, EXIT_OK
from jsreplay.cli.options import (
    elision_options,
    elision_threshold,
    ignore_option,
    listen_options,
    listen_tls_options,
    schema_option,
    upstream_options,
    upstream_trust,
)
from jsreplay.cli.progress import StatusLine
from jsreplay.cli.recording import run_until_stopped as run_recorder
from jsreplay.inspect.values import printable
from jsreplay.record import RecordConfig
from jsreplay.record.episodes import EpisodeRecorder
from jsreplay.replay import MatchMode, ReplayConfig, ReplayReport, ReplayServer
from jsreplay.replay.coverage import describe_left
from jsreplay.replay.faults import FaultPlan, FaultSpecError, parse_cut, parse_delay, parse_fault
from jsreplay.replay.playback import UNFINISHED_TIMEOUT_S
from jsreplay.replay.record_mode import RecordMode
from jsreplay.replay.server import Fallback
from jsreplay.serving import ListenTLS


async def _serve(
    config: ReplayConfig, exec_command: str | None, fallback: Callable[[str], Fallback] | None = None
) -> tuple[ReplayReport, int | None]:
    server = ReplayServer(config, fallback)
    await server.start()
    trust = "plaintext" if config.tls.plaintext else f"CA file {server.ca_file}"
    names = ", ".join(str(c) for c in config.cassettes)
    click.echo(f"jsreplay replay: listening on {server.endpoint} ({trust}), serving {names}")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    child: asyncio.subprocess.Process | None = None
    if exec_command is not None:
        env = dict(os.environ)
        env["JSREPLAY_ENDPOINT"] = server.endpoint
        if server.ca_file is not None:
            env["JSREPLAY_CA_FILE"] = str(server.ca_file)
        child = await asyncio.create_subprocess_shell(exec_command, env=env)
    status = StatusLine()
    exit_code: int | None = None
    try:
        while not stop.is_set():
            if child is not None and child.returncode is not None:
                exit_code = child.returncode
                break
            assert server.handler is not None
            report = server.handler.report
            served = sum(n for _, n in server.handler.matcher.scripts())
            status.show(f"{served} calls served, {len(report.missed)} missed, {len(report.unfinished)} unfinished")
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass
    finally:
        status.clear()
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                exit_code = await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                exit_code = await child.wait()
        report = await server.stop()
    return report, exit_code


def _spec_option(name: str, parse: Callable[[str], object], metavar: str, help: str) -> Callable[[Any], Any]:
    """A repeatable fault-spec flag, parsed when given: a bad spec is one line and exit 2, never a traceback."""

    def check(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Any, ...]:
        try:
            return tuple(parse(v) for v in values)
        except FaultSpecError as err:
            click.echo(f"jsreplay: error: {name}: {err}", err=True)
            ctx.exit(EXIT_ERROR)

    return click.option(name, multiple=True, metavar=metavar, callback=check, expose_value=True, help=help)


@click.command("replay")
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@listen_options("peers")
@click.option(
    "--match",
    type=click.Choice([m.value for m in MatchMode]),
    default="default",
    show_default=True,
    help="default: decoded request minus volatile fields; strict: every byte; order: method and order only.",
)
@ignore_option("Also ignore this field when matching (repeatable).")
@click.option("--allow-repeats", is_flag=True, help="Serve a recording again once the matching ones are used up.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="0: as fast as causal order allows; 1: the recorded pace; N: N times faster.",
)
@click.option(
    "--unfinished-timeout",
    type=click.FloatRange(min=0),
    default=UNFINISHED_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="A call whose recording has no end (a cut cassette) is answered as far as recorded, waits at most this "
    "long for each request its recording has (a streamed one stays open this long after its last response), then "
    "fails with DATA_LOSS.",
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in RecordMode]),
    default="none",
    show_default=True,
    help="none: replay only; once: record from --upstream if the cassette does not exist; new_episodes: replay, "
    "and forward calls that miss to --upstream, appending them to the cassette; all: always re-record.",
)
@click.option("--upstream", metavar="HOST:PORT", help="The real controller, for --mode once, new_episodes and all.")
@upstream_options
@elision_options
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON report.")
@click.option(
    "--coverage",
    "coverage_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the coverage (per cassette: calls, inner calls and driver methods served, and left) as JSON.",
)
@click.option(
    "--fail-unused",
    is_flag=True,
    help="Exit 1 when a recording was never used (polls such as GetLease, ReportStatus and GetStatus that were "
    "served at least once, calls of peers that never connected, and recordings a fault displaced excepted).",
)
@_spec_option(
    "--fault",
    parse_fault,
    "SELECTOR=CODE[:DETAILS]",
    "Answer matching calls with this status instead of the recording, e.g. "
    "'ExporterService/DriverCall[power.on]#1=UNAVAILABLE:busy' (repeatable; see docs).",
)
@_spec_option(
    "--delay",
    parse_delay,
    "SELECTOR=SECONDS",
    "Delay matching calls before they are served, e.g. 'ExporterService/DriverCall=0.5s' (repeatable).",
)
@_spec_option(
    "--cut-tunnel",
    parse_cut,
    "after=BYTES|at=SELECTOR",
    "End router streams with UNAVAILABLE after BYTES sent into each, or at the inner call SELECTOR (repeatable).",
)
@click.option(
    "--exec",
    "exec_command",
    metavar="COMMAND",
    help="Run COMMAND (with JSREPLAY_ENDPOINT and JSREPLAY_CA_FILE set) and stop when it ends.",
)
@schema_option("Decode the cassettes with this schema (union, v0.9.0, head, or a path) instead of their own.")
def replay_command(
    cassettes: tuple[Path, ...],
    listen: str,
    advertise: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    ca_out: Path | None,
    plaintext: bool,
    match: str,
    ignores: tuple[str, ...],
    allow_repeats: bool,
    speed: float,
    unfinished_timeout: float,
    mode: str,
    upstream: str | None,
    upstream_ca: Path | None,
    upstream_insecure: bool,
    elide_above: str,
    keep_payloads: bool,
    report_file: Path | None,
    coverage_file: Path | None,
    fail_unused: bool,
    fault: tuple[Any, ...],
    delay: tuple[Any, ...],
    cut_tunnel: tuple[Any, ...],
    exec_command: str | None,
    schema: bytes | None,
) -> None:
    """Serve CASSETTES as a Jumpstarter controller, router and exporter, with no cluster.

    Exit codes: 0 every call matched; 1 some call missed, a recording was left unused with --fail-unused (or
    --exec's command failed); 2 an error: a bad flag, a call that could not be answered from the cassette (a
    recording that could not be read back because the cassette changed while it was served, a recording with no
    end in a cut cassette, tunnel input that does not parse). Injected faults are never misses.
    """
    tls = listen_tls_options(tls_cert, tls_key, ca_out, plaintext, listen=listen)
    threshold = elision_threshold(elide_above, keep_payloads)
    record_mode = RecordMode(mode)
    record = record_mode.records(missing=not all(c.exists() for c in cassettes))
    if record_mode.needs_upstream and upstream is None:
        raise click.UsageError(f"--mode {mode} records from an upstream: give --upstream HOST:PORT")
    if record:
        if len(cassettes) != 1:
            raise click.UsageError(f"--mode {mode} records into one cassette; {len(cassettes)} given")
        assert upstream is not None
        _record_instead(
            cassettes[0], upstream, upstream_ca, upstream_insecure, listen, advertise, tls, record_mode, threshold
        )
        return
    missing = [str(c) for c in cassettes if not c.exists()]
    if missing:
        raise click.UsageError(f"no such cassette: {', '.join(missing)} (--mode once records it from --upstream)")
    config = ReplayConfig(
        cassettes=cassettes,
        listen=listen,
        advertise=advertise,
        tls=tls,
        match=MatchMode(match),
        ignores=ignores,
        allow_repeats=allow_repeats,
        speed=speed,
        unfinished_timeout=unfinished_timeout,
        faults=FaultPlan(faults=fault, delays=delay, cuts=cut_tunnel),
        schema=schema,
    )
    fallback = None
    if record_mode.forwards_misses:
        if len(cassettes) != 1:
            raise click.UsageError(f"--mode new_episodes appends to one cassette; {len(cassettes)} given")
        assert upstream is not None
        trust = upstream_trust(upstream_ca, upstream_insecure)
        cassette, target = cassettes[0], upstream

        def fallback(advertise: str) -> Fallback:
            return EpisodeRecorder(
                cassette, upstream=target, trust=trust, advertise=advertise, listen=listen, elide_above=threshold
            )

    report, child_code = asyncio.run(_serve(config, exec_command, fallback))
    if report_file is not None:
        report.write(report_file)
    coverage = report.coverage()
    if coverage_file is not None:
        coverage.write(coverage_file)
    click.echo(coverage.table(), err=True)
    click.echo(f"jsreplay replay: {report.summary()}", err=True)
    for miss in report.missed:
        click.echo(f"jsreplay: miss: {printable(miss.reason)}", err=True)
    for unfinished in report.unfinished:
        click.echo(f"jsreplay: unfinished: {printable(unfinished.reason)}", err=True)
    for error in report.errors:
        click.echo(f"jsreplay: error: {printable(error.reason)}", err=True)
    if fail_unused and report.left:
        click.echo(f"jsreplay: {len(report.left)} recording(s) never used (--fail-unused):", err=True)
        click.echo(describe_left(report.left), err=True)
    if child_code:
        click.echo(f"jsreplay replay: --exec command exited with {child_code}", err=True)
    raise SystemExit(exit_code(report, child_code, fail_unused=fail_unused))


def exit_code(report: ReplayReport, child_code: int | None, *, fail_unused: bool = False) -> int:
    """2 when a call could not be answered from the cassette (unreadable, no end, bad tunnel input); 1 for a miss,
    a recording left unused under --fail-unused, or a failed --exec command; else 0."""
    if report.errors or report.unfinished:
        return EXIT_ERROR
    if child_code or report.missed or (fail_unused and report.left):
        return EXIT_DIFFERENT
    return EXIT_OK


def _record_instead(
    cassette: Path,
    upstream: str,
    upstream_ca: Path | None,
    upstream_insecure: bool,
    listen: str,
    advertise: str | None,
    tls: ListenTLS,
    mode: RecordMode,
    elide_above: int | None,
) -> None:
    click.echo(f"jsreplay replay: --mode {mode.value}: recording {cassette} from {upstream}", err=True)
    config = RecordConfig(
        upstream=upstream,
        cassette=cassette,
        listen=listen,
        advertise=advertise,
        upstream_trust=upstream_trust(upstream_ca, upstream_insecure),
        tls=tls,
        overwrite=mode.overwrites,
        elide_above=elide_above,
    )
    proxy = asyncio.run(run_recorder(config))
    if proxy.error:
        click.echo(f"jsreplay: error: {proxy.error}", err=True)
        raise SystemExit(EXIT_ERROR)
