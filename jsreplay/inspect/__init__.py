"""Inspect and diff cassettes: values in, values out (the CLI reads the files and prints).

- `view`: `build_view(header, calls) -> CassetteView`, every call decoded with the cassette's own schema and
  every tunnel's inner calls decoded with the tunnel decoder replay uses; shared by everything below.
- `show` (timeline text and JSON), `mermaid` (a sequence diagram), `textconv` (stable text for git).
- `diff`: `diff_views(old, new, DiffOptions()) -> DiffReport`, built on `canon` (calls as comparable units,
  run-to-run noise normalised), `align` (sequence alignment), `ignores` (the default list of volatile fields
  and values) and `schema_diff` (embedded schemas compared).
- `values`: decoded values as JSON and as readable text.

See docs/inspect.md for the formats and rules.
"""
