"""Verify: play the controller and the recorded client for a real exporter, and compare its answers.

    async with jsreplay.verify.verifying("session.msgpack") as v:
        ...  # start the exporter with endpoint v.endpoint, trusting v.ca_pem (or v.ca_file)
        report = await v.wait()
    report.same, report.exit_code, report.render_text(), report.to_json()

See docs/verify.md.
"""

from jsreplay.verify.report import (
    CallReport,
    ControllerMiss,
    FieldDifference,
    TunnelReport,
    TunnelState,
    Verdict,
    VerifyReport,
)
from jsreplay.verify.server import DEFAULT_TIMEOUT_S, Verifier, VerifyConfig, VerifyError, verifying

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CallReport",
    "ControllerMiss",
    "FieldDifference",
    "TunnelReport",
    "TunnelState",
    "Verdict",
    "Verifier",
    "VerifyConfig",
    "VerifyError",
    "VerifyReport",
    "verifying",
]
