"""Property: how the recorded bytes were chunked must not change the decoded calls."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsreplay.tunnel import Direction, InnerCall, decode_tunnel

from .capture import Capture

Chunks = list[tuple[Direction, bytes]]
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _without_order(call: InnerCall) -> InnerCall:
    """The call with its seqs blanked: what must not depend on the interleaving of the two directions."""
    return dataclasses.replace(
        call,
        request_messages=[dataclasses.replace(m, seq=0) for m in call.request_messages],
        response_messages=[dataclasses.replace(m, seq=0) for m in call.response_messages],
        opened_seq=0,
        request_ended_seq=None,
        response_headers_seq=None,
        closed_seq=None,
    )


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _cuts(size: int) -> st.SearchStrategy[list[int]]:
    # Anywhere, plus densely near the start where the preface, SETTINGS and header blocks are.
    return st.lists(st.one_of(st.integers(0, size), st.integers(0, min(size, 3000))), max_size=80)


@PROPERTY
@given(data=st.data())
def test_any_resplit_and_interleaving_gives_the_same_calls(captured: Capture, data: st.DataObject) -> None:
    pieces: dict[Direction, list[bytes]] = {}
    for direction in Direction:
        stream = b"".join(chunk for d, chunk in captured.chunks if d is direction)
        pieces[direction] = _split(stream, data.draw(_cuts(len(stream)), label=direction.value))
    # Any merge of the two directions' pieces that keeps each direction's own order.
    order = data.draw(st.permutations([d for d in Direction for _ in pieces[d]]), label="interleaving")
    queues = {direction: iter(pieces[direction]) for direction in Direction}
    chunks: Chunks = [(direction, next(queues[direction])) for direction in order]
    expected = [_without_order(call) for call in decode_tunnel(captured.chunks)]
    assert [_without_order(call) for call in decode_tunnel(chunks)] == expected


@PROPERTY
@given(data=st.data())
def test_resplitting_in_recorded_order_keeps_even_the_seqs(captured: Capture, data: st.DataObject) -> None:
    total = sum(len(chunk) for _, chunk in captured.chunks)
    cuts = sorted(set(data.draw(_cuts(total), label="cuts")))
    chunks: Chunks = []
    start = 0
    for direction, chunk in captured.chunks:
        inside = [cut - start for cut in cuts if start < cut < start + len(chunk)]
        for piece in _split(chunk, inside):
            # Sometimes glue a piece to the previous one of the same direction.
            if chunks and chunks[-1][0] is direction and data.draw(st.booleans(), label="merge"):
                chunks[-1] = (direction, chunks[-1][1] + piece)
            else:
                chunks.append((direction, piece))
        start += len(chunk)
    assert decode_tunnel(chunks) == decode_tunnel(captured.chunks)
