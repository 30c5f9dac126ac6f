"""Recording: a transparent proxy between Jumpstarter peers and a real controller/router."""

from jsreplay.record.proxy import RecordConfig, RecordingProxy, recording
from jsreplay.record.upstream import UpstreamTrust

__all__ = ["RecordConfig", "RecordingProxy", "UpstreamTrust", "recording"]
