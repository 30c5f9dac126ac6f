"""Editing cassettes after the fact: re-redact (`redact`), cut down (`trim`), join (`cat`).

Every edit reads its input with the streaming reader, writes a new cassette with the one `CassetteWriter`
(redaction included) to a temporary file next to the output, reads that back, and only then puts it in place.
The input is never written to; `--in-place` renames the new file over it.
"""
