"""The decoder parses its most frequent frame types itself: it must accept, reject and extract exactly what
hyperframe's parser does, with hyperframe's messages."""

from __future__ import annotations

import struct

from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame
from hypothesis import given, settings
from hypothesis import strategies as st

from jsreplay.tunnel.decoder import _FREQUENT, _MalformedFrame, _parse_frequent

_HEADER = struct.Struct(">HBBBI")


def _hyperframe(frame_type: int, flags: int, stream_id: int, body: bytes) -> tuple[bytes, int, int] | str:
    header = _HEADER.pack(len(body) >> 8, len(body) & 0xFF, frame_type, flags, stream_id)
    try:
        frame, _ = Frame.parse_frame_header(memoryview(header))
        frame.parse_body(memoryview(body))
    except HyperframeError as err:
        return str(err)
    padded = "PADDED" in frame.flags
    priority = "PRIORITY" in frame.flags
    return (
        getattr(frame, "data", b""),
        frame.pad_length if padded else 0,
        frame.depends_on if priority else -1,
    )


def _ours(frame_type: int, flags: int, stream_id: int, body: bytes) -> tuple[bytes, int, int] | str:
    # Embedded in a bigger buffer, as the decoder sees it.
    data = b"\xaa" * 7 + body + b"\xbb" * 5
    try:
        return _parse_frequent(frame_type, flags, stream_id & 0x7FFFFFFF, data, 7, 7 + len(body))
    except _MalformedFrame as err:
        return str(err)


@settings(max_examples=3000, deadline=None)
@given(
    frame_type=st.sampled_from(sorted(_FREQUENT)),
    flags=st.integers(0, 255),
    stream_id=st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF, 0x80000000, 0x80000001]),
    body=st.one_of(
        st.binary(max_size=24),
        # A plausible pad length, then a short body: the boundary cases of the padding rules.
        st.builds(lambda pad, rest: bytes([pad]) + rest, st.integers(0, 12), st.binary(max_size=12)),
        # WINDOW_UPDATE increments around the limits.
        st.sampled_from([struct.pack(">L", n) for n in (0, 1, 2**31 - 1, 2**31, 2**32 - 1)]),
    ),
)
def test_frequent_frames_parse_as_hyperframe_parses_them(
    frame_type: int, flags: int, stream_id: int, body: bytes
) -> None:
    assert _ours(frame_type, flags, stream_id, body) == _hyperframe(frame_type, flags, stream_id, body)
