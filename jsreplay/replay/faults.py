"""Injected faults, delays and tunnel cuts: the spec syntax, parsed at the edge into typed objects, and the
counters that decide, call by call, what to inject.

Specs (one per `--fault`, `--delay`, `--cut-tunnel`, or per marker entry):

    SELECTOR  = METHOD[ '[' DRIVER_METHOD ']' ][ '#' OCCURRENCE ]
    METHOD    = Service/Method, e.g. ExporterService/DriverCall, ControllerService/Dial (or the full path
                /jumpstarter.v1.ExporterService/DriverCall); outer and inner (tunnel) calls alike
    DRIVER_METHOD = [driver.]method, e.g. power.on or on (DriverCall and StreamingDriverCall only); the driver is
                its `jumpstarter.dev/name` label, or a dotted path of them from the root (parent.child.method)
    OCCURRENCE = N (the N-th call the selector matches, from 1), N-M, or N- (the N-th and every later one)

    --fault  SELECTOR=CODE[:details]       e.g. 'ExporterService/DriverCall[power.on]#1=UNAVAILABLE:board busy'
    --delay  SELECTOR=SECONDS[s|ms]        e.g. 'ExporterService/DriverCall=0.5s'
    --cut-tunnel after=BYTES               end each router stream once replay has sent BYTES into it
    --cut-tunnel at=SELECTOR               end the router stream carrying the inner call SELECTOR matches

A fault answers the call with the status instead of the recording (the recording is not used up: a retry gets it);
a delay waits before the call is served; a cut ends the outer router stream with UNAVAILABLE, as a router does
whose other end went away. Every injection is listed in the report; none counts as a miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jsreplay.protocol.wire import STATUS_CODE_NAMES, short_method

DRIVER_METHODS = frozenset({"ExporterService/DriverCall", "ExporterService/StreamingDriverCall"})

_SELECTOR = re.compile(
    r"^(?P<method>/?[A-Za-z_][\w.]*/[A-Za-z_]\w*)"
    r"(?:\[(?P<driver>[A-Za-z_][\w.]*)\])?"
    r"(?:#(?P<first>\d+)(?P<range>-(?P<last>\d+)?)?)?$"
)
_SECONDS = re.compile(r"^(?P<value>\d+(?:\.\d*)?|\.\d+)(?P<unit>s|ms)?$")


class FaultSpecError(ValueError):
    """A fault, delay or cut spec that does not parse; the message names the spec and what is wrong."""

    def __init__(self, spec: str, problem: str) -> None:
        super().__init__(f"{spec!r}: {problem}")


@dataclass(frozen=True)
class CallSelector:
    """Which calls a rule applies to: by method, driver method and occurrence."""

    method: str  # "ExporterService/DriverCall" (short form)
    driver: str | None = None  # "power" (a name, or a dotted path of names); None: any
    driver_method: str | None = None  # "on"; None: any call of `method`
    first: int | None = None  # occurrences first..last (1-based, inclusive); None: every one
    last: int | None = None

    def matches_call(self, method: str, driver_call: str | None = None) -> bool:
        """Whether a call (full method path; for driver calls "driver.path.method", e.g. "power.on") is one this
        selector counts."""
        if short_method(method) != self.method:
            return False
        if self.driver_method is None:
            return True
        path, _, name = (driver_call or "").rpartition(".")
        if name != self.driver_method:
            return False
        return self.driver is None or path == self.driver or path.endswith("." + self.driver)

    def takes(self, occurrence: int) -> bool:
        if self.first is None:
            return True
        return occurrence >= self.first and (self.last is None or occurrence <= self.last)

    def __str__(self) -> str:
        text = self.method
        if self.driver_method is not None:
            text += f"[{self.driver + '.' if self.driver else ''}{self.driver_method}]"
        if self.first is not None:
            if self.last == self.first:
                text += f"#{self.first}"
            else:
                text += f"#{self.first}-{self.last if self.last is not None else ''}"
        return text


@dataclass(frozen=True)
class Fault:
    selector: CallSelector
    code: str  # a gRPC status code name, e.g. "UNAVAILABLE"
    details: str
    spec: str

    @property
    def code_value(self) -> int:
        return STATUS_CODE_NAMES.index(self.code)


@dataclass(frozen=True)
class Delay:
    selector: CallSelector
    seconds: float
    spec: str


@dataclass(frozen=True)
class TunnelCut:
    spec: str
    after_bytes: int | None = None  # end the router stream once replay has sent this many payload bytes into it
    at: CallSelector | None = None  # or when an inner call this selects arrives


@dataclass(frozen=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()
    delays: tuple[Delay, ...] = ()
    cuts: tuple[TunnelCut, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.faults or self.delays or self.cuts)

    @property
    def specs(self) -> list[str]:
        rules: tuple[Fault | Delay | TunnelCut, ...] = (*self.faults, *self.delays, *self.cuts)
        return [r.spec for r in rules]


def parse_selector(text: str, spec: str | None = None) -> CallSelector:
    spec = text if spec is None else spec
    found = _SELECTOR.match(text.strip())
    if found is None:
        raise FaultSpecError(
            spec, "expected Service/Method[driver.method]#N, e.g. ExporterService/DriverCall[power.on]#1"
        )
    service, _, name = found["method"].lstrip("/").partition("/")
    method = f"{service.rsplit('.', 1)[-1]}/{name}"  # the package dropped, as short_method does
    driver = driver_method = None
    if found["driver"]:
        if method not in DRIVER_METHODS:
            raise FaultSpecError(spec, f"[{found['driver']}] names a driver method; only {_driver_calls()} have one")
        driver, _, driver_method = found["driver"].rpartition(".")
        driver = driver or None
    first = last = None
    if found["first"] is not None:
        first = int(found["first"])
        if first < 1:
            raise FaultSpecError(spec, "occurrences count from 1 (#1 is the first call)")
        if found["range"] is None:
            last = first
        elif found["last"] is not None:
            last = int(found["last"])
            if last < first:
                raise FaultSpecError(spec, f"#{first}-{last} is an empty range")
    return CallSelector(method=method, driver=driver, driver_method=driver_method, first=first, last=last)


def _driver_calls() -> str:
    return " and ".join(sorted(DRIVER_METHODS))


def _split(spec: str, what: str) -> tuple[str, str]:
    selector, sep, value = spec.rpartition("=")
    if not sep or not selector or not value:
        raise FaultSpecError(spec, f"expected SELECTOR={what}")
    return selector, value


def parse_fault(spec: str) -> Fault:
    """`SELECTOR=CODE[:details]`, e.g. `ExporterService/DriverCall[power.on]#1=UNAVAILABLE:board busy`."""
    head, sep, details = spec.partition("=")
    if not sep or not head or not details:
        raise FaultSpecError(spec, "expected SELECTOR=CODE[:details], e.g. ControllerService/Dial#1=UNAVAILABLE")
    code, _, details = details.partition(":")
    code = code.strip().upper()
    if code not in STATUS_CODE_NAMES or code == "OK":
        raise FaultSpecError(
            spec, f"{code or '(empty)'} is not a gRPC error code; one of {', '.join(STATUS_CODE_NAMES[1:])}"
        )
    selector = parse_selector(head, spec)
    return Fault(selector=selector, code=code, details=details or f"jsreplay: injected {code}", spec=spec)


def parse_delay(spec: str) -> Delay:
    """`SELECTOR=SECONDS`, with `s` (default) or `ms`: `ExporterService/DriverCall=0.5s`."""
    head, value = _split(spec, "SECONDS (e.g. 0.5s or 200ms)")
    found = _SECONDS.match(value.strip())
    if found is None:
        raise FaultSpecError(spec, f"{value!r} is not a duration; e.g. 0.5s or 200ms")
    seconds = float(found["value"]) / (1000 if found["unit"] == "ms" else 1)
    if seconds > 3600:
        raise FaultSpecError(spec, "a delay over an hour is surely a mistake")
    return Delay(selector=parse_selector(head, spec), seconds=seconds, spec=spec)


def parse_cut(spec: str) -> TunnelCut:
    """`after=BYTES` or `at=SELECTOR` (an inner call)."""
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or key not in ("after", "at") or not value:
        raise FaultSpecError(
            spec, "expected after=BYTES or at=SELECTOR, e.g. after=4096 or at=ExporterService/DriverCall#2"
        )
    if key == "after":
        if not value.strip().isdigit():
            raise FaultSpecError(spec, f"{value!r} is not a byte count")
        return TunnelCut(spec=spec, after_bytes=int(value))
    at = parse_selector(value, spec)
    if not at.method.startswith("ExporterService/"):
        raise FaultSpecError(spec, f"at= names an inner call (ExporterService/...), not {at.method}")
    return TunnelCut(spec=spec, at=at)


def parse_plan(faults: tuple[str, ...] = (), delays: tuple[str, ...] = (), cuts: tuple[str, ...] = ()) -> FaultPlan:
    """All specs at once; raises `FaultSpecError` for the first that does not parse."""
    return FaultPlan(
        faults=tuple(parse_fault(s) for s in faults),
        delays=tuple(parse_delay(s) for s in delays),
        cuts=tuple(parse_cut(s) for s in cuts),
    )


@dataclass(frozen=True)
class Injection:
    """One injected fault, delay or cut, as listed in the report."""

    kind: str  # "fault", "delay", "cut"
    spec: str
    method: str
    occurrence: int  # which call of the rule's selector it was (1-based); for `after=` cuts, the tunnel's number
    at_s: float
    driver_call: str | None = None  # "power.on" for driver calls
    recording: str | None = None  # the recording the call would have been served (a fault displaced it)
    detail: str = ""


@dataclass
class Decision:
    """What to do with one call."""

    fault: Fault | None = None
    delay: float = 0.0
    cut: TunnelCut | None = None
    fired: list[tuple[Fault | Delay | TunnelCut, int]] = field(default_factory=list)  # (rule, occurrence)


class FaultInjector:
    """Counts the calls each rule's selector matches, over the whole replay (outer calls and every tunnel's inner
    calls), and says which rules apply to a call. One per replay server; used on its event loop only."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._seen: dict[int, int] = {}  # id(rule) -> calls its selector matched so far

    def _count(self, rule: object, selector: CallSelector, method: str, driver_call: str | None) -> int:
        if not selector.matches_call(method, driver_call):
            return 0
        n = self._seen.get(id(rule), 0) + 1
        self._seen[id(rule)] = n
        return n if selector.takes(n) else 0

    def decide(self, method: str, driver_call: str | None = None) -> Decision:
        decision = Decision()
        if not self.plan:
            return decision
        for fault in self.plan.faults:
            n = self._count(fault, fault.selector, method, driver_call)
            if n and decision.fault is None:
                decision.fault = fault
                decision.fired.append((fault, n))
        for delay in self.plan.delays:
            n = self._count(delay, delay.selector, method, driver_call)
            if n:
                decision.delay += delay.seconds
                decision.fired.append((delay, n))
        for cut in self.plan.cuts:
            if cut.at is None:
                continue
            n = self._count(cut, cut.at, method, driver_call)
            if n and decision.cut is None:
                decision.cut = cut
                decision.fired.append((cut, n))
        return decision

    @property
    def byte_cut(self) -> TunnelCut | None:
        return next((c for c in self.plan.cuts if c.after_bytes is not None), None)
