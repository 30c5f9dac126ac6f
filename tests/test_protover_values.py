"""Fields a schema does not know, across protocol versions: unknown maps compare unordered (in replay's matcher
and in the views diff and show read), printable unknown bytes show as text, and a miss shows where two long
values differ."""

from __future__ import annotations

from jsreplay.inspect.values import unknown_text
from jsreplay.inspect.view import decode_message
from jsreplay.protocol.registry import (
    Registry,
    UnknownField,
    WireType,
    encode_unknown,
    printable_text,
    unknown_map,
)
from jsreplay.protocol.schemas import shipped
from jsreplay.replay.matching import Matcher, MatchMode, Mismatch
from jsreplay.replay.script import Script

V090 = Registry(shipped("v0.9.0"))
HEAD = Registry(shipped("head"))
CREATE_LEASE = "/jumpstarter.client.v1.ClientService/CreateLease"
CONTEXT = {f"key{i}": f"value {i}" for i in range(12)}


def _entry(key: str, value: str) -> bytes:
    return HEAD.encode("jumpstarter.client.v1.Lease.ContextEntry", {"key": key, "value": value})


def _create_lease(order: list[str]) -> bytes:
    """A development client's CreateLease with `context` entries in the given order (as another process's hash
    table would put them), serialised by hand so the order is the test's."""
    base = HEAD.encode("jumpstarter.client.v1.Lease", {"selector": "board=demo"})
    entries = [UnknownField(15, WireType.LENGTH_DELIMITED, _entry(k, CONTEXT[k])) for k in order]
    lease = base + b"".join(encode_unknown(e) for e in entries)
    return HEAD.encode("jumpstarter.client.v1.CreateLeaseRequest", {"parent": "namespaces/default"}) + encode_unknown(
        UnknownField(3, WireType.LENGTH_DELIMITED, lease)
    )


def _matcher(registry: Registry) -> Matcher:
    return Matcher(registry_for=lambda _s: registry, kind_of=registry.kind_of, mode=MatchMode.DEFAULT)


def test_an_unknown_map_in_another_order_still_matches() -> None:
    keys = list(CONTEXT)
    recorded, live = _create_lease(keys), _create_lease(keys[::-1])
    assert recorded != live
    script = Script(key="c#1", method=CREATE_LEASE, requests=[recorded], responses=[], initial_metadata=(), code=0)
    # With 0.9.0's schema `context` (15) is unknown; with the development schema it is a known map.
    for registry in (V090, HEAD):
        assert _matcher(registry).differences(script, live) == []
    changed = _create_lease(keys[:-1])
    assert _matcher(V090).differences(script, changed) != []


def test_the_view_sorts_unknown_map_entries_so_diff_and_show_see_one_order() -> None:
    keys = list(CONTEXT)
    type_name = "jumpstarter.client.v1.CreateLeaseRequest"
    a = decode_message(V090, type_name, _create_lease(keys)).value
    b = decode_message(V090, type_name, _create_lease(keys[::-1])).value
    assert a == b and a is not None and "#15" in a["lease"]


def test_unknown_map_reads_entries_and_refuses_other_shapes() -> None:
    fields = [UnknownField(15, WireType.LENGTH_DELIMITED, _entry("b", "2")),
              UnknownField(15, WireType.LENGTH_DELIMITED, _entry("a", "1"))]  # fmt: skip
    assert unknown_map(fields) == {"b": "2", "a": "1"}
    assert unknown_map([UnknownField(15, WireType.VARINT, 3)]) is None
    assert unknown_map([UnknownField(15, WireType.LENGTH_DELIMITED, b"\x1a\x01x")]) is None  # field 3: not an entry


def test_printable_unknown_bytes_show_as_text() -> None:
    assert printable_text(b"Welcome to the lab") == "Welcome to the lab"
    assert printable_text(b"\x08\x01") is None
    motd = UnknownField(5, WireType.LENGTH_DELIMITED, b"Welcome to the lab")
    assert unknown_text([motd]) == 'unknown field: "Welcome to the lab" (length_delimited)'
    assert "0x0801" in unknown_text([UnknownField(5, WireType.LENGTH_DELIMITED, b"\x08\x01")])


def test_a_miss_shows_where_long_values_differ_not_a_cut_prefix() -> None:
    common = "x" * 120
    text = str(Mismatch("lease.selector", common + "recorded-end", common + "live-end"))
    assert "recorded-end" in text and "live-end" in text
    assert "(at " in text
