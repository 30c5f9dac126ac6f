"""The `jsreplay` command line: one module per command, all sharing the error handling below.

Exit codes (documented in the README): 0 success; 1 the command ran and found a problem it reports (a replay
miss, a diff, a verification difference); 2 an error (bad flags, unreadable cassette, unreachable upstream).
"""

from __future__ import annotations

from jsreplay.cli.main import EXIT_DIFFERENT, EXIT_ERROR, EXIT_OK, cli, main

__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_OK", "cli", "main"]
