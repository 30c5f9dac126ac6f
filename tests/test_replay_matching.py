"""Matchers and response rewriting, without sockets."""

from __future__ import annotations

import time

from jsreplay.protocol.registry import Registry, StreamKind
from jsreplay.replay.matching import Matcher, MatchMode
from jsreplay.replay.rewrite import ResponseRewriter
from jsreplay.replay.script import Script

REGISTRY = Registry.default()
DRIVER_CALL = "/jumpstarter.v1.ExporterService/DriverCall"
GET_LEASE = "/jumpstarter.client.v1.ClientService/GetLease"
REGISTER = "/jumpstarter.v1.ControllerService/Register"


def request(method: str, value: dict[str, object]) -> bytes:
    info = REGISTRY.method(method)
    assert info is not None
    return REGISTRY.encode(info.request_type, value)


def script(method: str, value: dict[str, object], key: str) -> Script:
    return Script(key=key, method=method, requests=[request(method, value)], responses=[], initial_metadata=(), code=0)


def matcher(mode: MatchMode = MatchMode.DEFAULT, **kwargs: object) -> Matcher:
    def kind(method: str) -> StreamKind:
        info = REGISTRY.method(method)
        return info.kind if info else StreamKind.BIDI_STREAMING

    return Matcher(registry_for=lambda _s: REGISTRY, kind_of=kind, mode=mode, **kwargs)  # type: ignore[arg-type]


def test_recordings_are_used_up_in_order_then_the_last_match_repeats_for_polls() -> None:
    m = matcher()
    m.add([script(GET_LEASE, {"name": "l1"}, "c#1"), script(GET_LEASE, {"name": "l1"}, "c#2")])
    live = request(GET_LEASE, {"name": "l1"})
    first, second, third = (m.match(GET_LEASE, live) for _ in range(3))
    assert first.script and first.script.key == "c#1" and not first.repeated
    assert second.script and second.script.key == "c#2" and not second.repeated
    assert third.script and third.script.key == "c#2" and third.repeated  # a poll that ran once more


def test_strict_never_repeats_unless_allowed() -> None:
    live = request(GET_LEASE, {"name": "l1"})
    strict = matcher(MatchMode.STRICT)
    strict.add([script(GET_LEASE, {"name": "l1"}, "c#1")])
    assert strict.match(GET_LEASE, live).script is not None
    miss = strict.match(GET_LEASE, live)
    assert miss.script is None and "used up" in miss.explanation and "--allow-repeats" in miss.explanation

    repeating = matcher(MatchMode.STRICT, allow_repeats=True)
    repeating.add([script(GET_LEASE, {"name": "l1"}, "c#1")])
    assert repeating.match(GET_LEASE, live).script is not None
    again = repeating.match(GET_LEASE, live)
    assert again.script is not None and again.repeated


def test_a_miss_names_the_method_matcher_and_field_differences() -> None:
    m = matcher()
    m.add([script(DRIVER_CALL, {"uuid": "u1", "method": "on", "args": []}, "c#7/stream 3")])
    outcome = m.match(DRIVER_CALL, request(DRIVER_CALL, {"uuid": "u1", "method": "off", "args": [5]}))
    assert outcome.script is None
    text = outcome.explanation
    assert text.startswith(f"jsreplay: no recording matches {DRIVER_CALL} (matcher default; 1 recorded, 1 unused)")
    assert "nearest is c#7/stream 3" in text
    assert "method: recorded 'on', got 'off'" in text
    assert "args[0]: recorded '<absent>', got 5.0" in text


def test_never_recorded_method_lists_what_was() -> None:
    m = matcher()
    m.add([script(GET_LEASE, {"name": "l1"}, "c#1")])
    outcome = m.match("/jumpstarter.v1.ControllerService/Dial", request("/jumpstarter.v1.ControllerService/Dial", {}))
    assert outcome.script is None
    assert "was never recorded" in outcome.explanation and "ClientService/GetLease" in outcome.explanation


def test_default_ignores_volatile_fields_strict_does_not() -> None:
    recorded = {"reports": [{"uuid": "aaaa", "labels": {"jumpstarter.dev/name": "power"}}]}
    live = request(REGISTER, {"reports": [{"uuid": "bbbb", "labels": {"jumpstarter.dev/name": "power"}}]})
    default = matcher()
    default.add([script(REGISTER, recorded, "c#1")])
    assert default.match(REGISTER, live).script is not None  # driver UUIDs are new every exporter run
    strict = matcher(MatchMode.STRICT)
    strict.add([script(REGISTER, recorded, "c#1")])
    outcome = strict.match(REGISTER, live)
    assert outcome.script is None and "reports[0].uuid: recorded 'aaaa', got 'bbbb'" in outcome.explanation
    # A label that changes is a real difference even in default mode.
    changed = request(REGISTER, {"reports": [{"uuid": "cccc", "labels": {"jumpstarter.dev/name": "relay"}}]})
    other = matcher()
    other.add([script(REGISTER, recorded, "c#1")])
    assert other.match(REGISTER, changed).script is None


def test_ignore_option_and_redacted_values_match_anything() -> None:
    m = matcher(ignores=("ClientService/GetLease.request.name",))
    m.add([script(GET_LEASE, {"name": "l1"}, "c#1")])
    assert m.match(GET_LEASE, request(GET_LEASE, {"name": "another"})).script is not None
    redacted = matcher()
    redacted.add([script(GET_LEASE, {"name": "redacted:0123456789ab"}, "c#1")])
    assert redacted.match(GET_LEASE, request(GET_LEASE, {"name": "the-real-secret"})).script is not None


def test_order_mode_matches_method_only() -> None:
    m = matcher(MatchMode.ORDER)
    m.add([script(DRIVER_CALL, {"method": "on"}, "c#1"), script(DRIVER_CALL, {"method": "off"}, "c#2")])
    got = [m.match(DRIVER_CALL, request(DRIVER_CALL, {"method": "anything"})).script for _ in range(2)]
    assert [s.key for s in got if s] == ["c#1", "c#2"]


def test_rewriter_shifts_timestamps_and_points_router_at_the_server() -> None:
    week = 7 * 24 * 3600
    recorded_begin = int(time.time()) - week
    lease = REGISTRY.encode(
        "jumpstarter.client.v1.Lease",
        {
            "name": "l1",
            "begin_time": {"seconds": recorded_begin},
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": {"seconds": recorded_begin}}],
        },
    )
    rewriter = ResponseRewriter(REGISTRY, advertise="127.0.0.1:9999", shift_seconds=week)
    out = REGISTRY.decode("jumpstarter.client.v1.Lease", rewriter.rewrite(GET_LEASE, lease))
    assert out["begin_time"]["seconds"] == recorded_begin + week
    assert out["conditions"][0]["lastTransitionTime"]["seconds"] == recorded_begin + week
    assert out["name"] == "l1"

    dial = REGISTRY.encode("jumpstarter.v1.DialResponse", {"router_endpoint": "10.0.0.1:443", "router_token": "t"})
    rewritten = rewriter.rewrite("/jumpstarter.v1.ControllerService/Dial", dial)
    assert REGISTRY.decode("jumpstarter.v1.DialResponse", rewritten) == {
        "router_endpoint": "127.0.0.1:9999",
        "router_token": "t",
    }
    no_targets = request(GET_LEASE, {"name": "x"})
    assert rewriter.rewrite("/jumpstarter.client.v1.ClientService/DeleteLease", no_targets) is no_targets
