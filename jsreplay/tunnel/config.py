"""The tunnel decoder's options, in one object (as h2 keeps ``H2Configuration`` apart from its state machine)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .framing import MAX_FRAME_SIZE
from .headers import MAX_HEADER_BLOCK_SIZE, MAX_HEADER_LIST_SIZE, MAX_HEADER_TABLE_SIZE, HeaderBlockCache
from .messages import MAX_MESSAGE_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoderConfig:
    """Limits and switches of :class:`~jsreplay.tunnel.TunnelDecoder`; the limits default to the ``MAX_*`` constants.

    Each configuration owns a :class:`HeaderBlockCache` of decoded header blocks, shared by every decoder built
    with it: that sharing across tunnels is what makes it pay, so build one configuration and reuse it
    (``dataclasses.replace`` gives the copy a cache of its own).
    """

    max_frame_size: int = MAX_FRAME_SIZE
    max_header_block_size: int = MAX_HEADER_BLOCK_SIZE
    max_header_list_size: int = MAX_HEADER_LIST_SIZE
    max_header_table_size: int = MAX_HEADER_TABLE_SIZE
    max_message_size: int = MAX_MESSAGE_SIZE
    #: Messages longer than this many bytes are located, not copied: their events carry empty ``data`` and the
    #: ``spans`` of the direction's byte stream that hold the message (replay reads them back from the cassette
    #: when it sends them, so a tunnel's big downloads and uploads are never held). None keeps every message's
    #: bytes (show, diff and verify).
    locate_over: int | None = None
    #: Step over well-formed WINDOW_UPDATE and PING frames without handling them (tests turn it off to compare).
    skip_flow_control: bool = True
    #: Bounds of the header block cache: blocks held (0 turns it off), and the largest block and HPACK table
    #: cached (bigger blocks are rare; gRPC peers use 4 KiB tables).
    header_cache_blocks: int = 1024
    header_cache_max_block: int = 4096
    header_cache_max_table: int = 16384
    header_cache: HeaderBlockCache = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.locate_over is not None and self.locate_over < 0:
            raise ValueError(f"locate_over must be None or >= 0, not {self.locate_over}")
        cache = HeaderBlockCache(
            max_blocks=self.header_cache_blocks,
            max_block=self.header_cache_max_block,
            max_table=self.header_cache_max_table,
        )
        object.__setattr__(self, "header_cache", cache)


#: What ``TunnelDecoder()`` uses: one configuration, so that every tunnel shares its header block cache.
DEFAULT_CONFIG = DecoderConfig()
