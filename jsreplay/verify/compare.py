"""Recorded inner call vs live inner call, with the diff engine's values, masks and ignore rules.

Both calls become the canonical bodies `jsreplay diff` compares (`inspect.canon.UnitBuilder`: decoded, masked by
`inspect.ignores.Normalizer`, byte streams joined), and `inspect.diff.value_diffs` lists the field paths that
differ. Each side gets its own normaliser, because driver UUIDs are masked as `<driver:NAME>` with the names
from that side's own GetReport: a DriverCallResponse compares by driver, not by UUID.

Only what the exporter decides is compared: responses, initial and trailing metadata, the outcome (status
code class) and, for errors, the details. The requests and their metadata are verify's own (the recorded
ones, UUIDs rewritten), so they are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsreplay.inspect.canon import UnitBuilder, fold_stream, stream_kind
from jsreplay.inspect.diff import value_diffs
from jsreplay.inspect.ignores import Normalizer
from jsreplay.inspect.view import CallEnd, EndKind, ViewCall, ViewMessage, decode_message
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import code_name
from jsreplay.tunnel.calls import InnerCall, InnerMessage
from jsreplay.tunnel.events import ErrorCode, application_metadata
from jsreplay.verify.report import CallReport, FieldDifference, Verdict
from jsreplay.verify.session import LiveCall, LiveEnd

COMPARED = ("responses", "initial_metadata", "trailing_metadata", "outcome", "details")
_UNAVAILABLE = 14
_RESET_STATUS = {0x8: "CANCELLED", 0xB: "RESOURCE_EXHAUSTED", 0x7: "UNAVAILABLE", 0xC: "PERMISSION_DENIED"}


def _messages(registry: Registry, type_name: str | None, messages: Sequence[InnerMessage]) -> list[ViewMessage]:
    out = []
    for m in messages:
        if m.compressed:
            out.append(ViewMessage(data=m.data, type_name=type_name, error="compressed message"))
        else:
            out.append(decode_message(registry, type_name, m.data))
    return out


def _types(registry: Registry, method: str) -> tuple[str | None, str | None]:
    info = registry.method(method)
    return (info.request_type, info.response_type) if info is not None else (None, None)


def recorded_view(registry: Registry, call: InnerCall) -> ViewCall:
    method = call.method or "?"
    request_type, response_type = _types(registry, method)
    if call.code is not None:
        end = CallEnd(EndKind.STATUS, code_name(call.code), call.details)
    elif call.reset is not None:
        try:
            reason = ErrorCode(call.reset).name
        except ValueError:
            reason = f"error code {call.reset}"
        by = "client" if call.reset_by_client else "exporter"
        end = CallEnd(EndKind.RESET, _RESET_STATUS.get(call.reset, "INTERNAL"), reason, by=by)
    else:
        end = CallEnd(EndKind.CLOSED, None)
    return ViewCall(
        id=call.stream_id,
        method=method,
        role="tunnel",
        caller="Client",
        end=end,
        known=request_type is not None,
        metadata=application_metadata(call.request_metadata),
        initial_metadata=application_metadata(call.response_metadata) if call.http_status is not None else None,
        trailing_metadata=application_metadata(call.trailing_metadata),
        requests=_messages(registry, request_type, call.request_messages),
        responses=_messages(registry, response_type, call.response_messages),
    )


def live_view(registry: Registry, live: LiveCall) -> ViewCall:
    method = live.method
    request_type, response_type = _types(registry, method)
    if live.end is LiveEnd.CANCELLED:
        end = CallEnd(EndKind.RESET, "CANCELLED", "CANCEL", by="client")
    elif live.end is LiveEnd.CLOSED or live.code is None:
        end = CallEnd(EndKind.CLOSED, None)
    else:
        end = CallEnd(EndKind.STATUS, code_name(live.code), live.details)
    return ViewCall(
        id=live.recorded.stream_id,
        method=method,
        role="tunnel",
        caller="Client",
        end=end,
        known=request_type is not None,
        metadata=live.sent_metadata,
        initial_metadata=live.initial_metadata,
        trailing_metadata=live.trailing_metadata,
        requests=[decode_message(registry, request_type, data) for data in live.requests],
        responses=[decode_message(registry, response_type, data) for data in live.responses],
    )


def _body(builder: UnitBuilder, view: ViewCall) -> dict[str, Any]:
    body = builder.unit(view).body
    return {key: body[key] for key in COMPARED if key in body}


def _missing_reason(recorded: InnerCall, live: LiveCall) -> str | None:
    """Why the exporter gave no answer at all, or None when it answered (an error status is an answer)."""
    if live.end is LiveEnd.NOT_SENT:
        return live.note or "not sent: the tunnel never opened"
    if live.end is LiveEnd.NO_ANSWER:
        return live.note or "no answer"
    if (
        live.end is LiveEnd.STATUS
        and live.code == _UNAVAILABLE
        and recorded.code != _UNAVAILABLE
        and not live.responses
        and not live.initial_metadata
    ):
        # gRPC's own status for a connection that failed or closed under the call.
        return f"no answer: UNAVAILABLE: {live.details}" if live.details else "no answer: UNAVAILABLE"
    return None


def _as_output(a: list[Any], b: list[Any]) -> tuple[list[Any], list[Any]]:
    """A StreamingDriverCall's responses as `jsreplay diff` compares them: streamed output split into messages
    otherwise is the same output (the shell driver sends its exit code with the last line or after it, as its poll
    and the process's exit race), and output split into a different number of messages is compared joined."""
    if a == b:
        return a, b
    joined_a, joined_b = [p.value for p in fold_stream(a)], [p.value for p in fold_stream(b)]
    if joined_a == joined_b:
        return a, a
    if len(a) != len(b):
        return joined_a, joined_b
    return a, b


def compare_call(
    registry: Registry,
    recorded: InnerCall,
    live: LiveCall,
    path: str,
    *,
    recorded_normalizer: Normalizer,
    live_normalizer: Normalizer,
) -> CallReport:
    method = recorded.method or "?"
    reason = _missing_reason(recorded, live)
    if reason is not None:
        return CallReport(path=path, method=method, verdict=Verdict.MISSING, reason=reason)
    recorded_call = recorded_view(registry, recorded)
    old = _body(UnitBuilder(recorded_normalizer), recorded_call)
    new = _body(UnitBuilder(live_normalizer), live_view(registry, live))
    if recorded.code is None and recorded.reset is not None and recorded.reset_by_client:
        # How many messages a stream got before its client cancelled it is a race (a LogStream's poll):
        # compare the ones both runs got.
        n = min(len(old.get("responses", [])), len(new.get("responses", [])))
        old["responses"], new["responses"] = old.get("responses", [])[:n], new.get("responses", [])[:n]
    if stream_kind(recorded_call, "responses") == "output":
        old["responses"], new["responses"] = _as_output(old.get("responses", []), new.get("responses", []))
    differences = [
        FieldDifference(kind=d.kind.value, path=d.path, recorded=d.old, live=d.new) for d in value_diffs(old, new, path)
    ]
    verdict = Verdict.DIFFERENT if differences else Verdict.SAME
    return CallReport(path=path, method=method, verdict=verdict, differences=differences, reason=live.note)
