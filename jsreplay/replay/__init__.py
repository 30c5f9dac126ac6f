"""Replay: mock servicers that serve cassettes back (controller, client service, router, exporter)."""

from jsreplay.replay.matching import MatchMode
from jsreplay.replay.report import ReplayReport
from jsreplay.replay.server import ReplayConfig, ReplayServer, replaying

__all__ = ["MatchMode", "ReplayConfig", "ReplayReport", "ReplayServer", "replaying"]
