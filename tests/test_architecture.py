"""The import direction the README's Design section states: cores, then the session floor, then the commands.

Read from the source (no imports run), so a wrong-way import fails here even when nothing exercises it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jsreplay"

CORES = {"cassette", "protocol", "tunnel", "files"}
NET = {"serving", "tls", "grpc_options"}  # the listening side and gRPC channel options, shared by the servers
SESSION = {"session"}
# What each part may import besides itself. Commands (cli, the pytest plugin, the package's entry points) may
# import anything; record and replay share only the cores, the session floor and the listening side.
ALLOWED: dict[str, set[str]] = {
    "cassette": CORES,
    "protocol": CORES,
    "tunnel": CORES,
    "files": set(),
    "serving": CORES | NET,
    "tls": NET,
    "grpc_options": NET,
    "session": CORES,
    "inspect": CORES | SESSION,
    "record": CORES | NET | SESSION | {"jsreplay"},  # `jsreplay.__version__` for the cassette header
    "replay": CORES | NET | SESSION,
    "verify": CORES | NET | SESSION | {"inspect", "replay"},
    "edit": CORES | SESSION | {"jsreplay", "inspect"},  # `__version__` for headers; inspect to read outputs back
    "testing": CORES | NET | SESSION | {"record"},
}
ANYTHING = {"cli", "pytest_plugin", "__init__", "__main__"}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "jsreplay":
        return None
    if len(parts) == 1:
        return "jsreplay"
    return parts[1]


def imports_by_part() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the files that import it."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                target = _part(name)
                if target is not None and target != part:
                    found.setdefault(part, {}).setdefault(target, set()).add(str(rel))
    return found


def test_every_part_imports_only_what_the_design_allows() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts <= set(ALLOWED) | ANYTHING, f"a part the design does not place: {parts - set(ALLOWED) - ANYTHING}"
    wrong = [
        f"{part} imports {target} ({', '.join(sorted(files))})"
        for part, targets in imports_by_part().items()
        if part not in ANYTHING
        for target, files in targets.items()
        if target not in ALLOWED[part]
    ]
    assert not wrong, "\n".join(wrong)


def test_inspecting_needs_no_grpc_server() -> None:
    code = (
        "import sys\n"
        "import jsreplay.inspect.show, jsreplay.inspect.diff, jsreplay.inspect.textconv, jsreplay.inspect.mermaid\n"
        "import jsreplay.cli.show, jsreplay.cli.diff, jsreplay.cli.textconv\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith(('jsreplay.record',"
        " 'jsreplay.replay', 'jsreplay.verify', 'jsreplay.serving'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_packages_and_the_context_managers_have_names_of_their_own() -> None:
    code = (
        "import sys, jsreplay\n"
        "assert 'grpc' not in sys.modules, 'import jsreplay loads gRPC'\n"
        "import jsreplay.record, jsreplay.replay, jsreplay.verify\n"
        "assert jsreplay.record.RecordingProxy and jsreplay.replay.ReplayServer and jsreplay.verify.Verifier\n"
        "assert jsreplay.recording is jsreplay.record.recording and jsreplay.replaying is jsreplay.replay.replaying\n"
        "assert jsreplay.verifying is jsreplay.verify.verifying\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
