"""A headless Chromium from the distribution, driven by its command line: load a page, dump its DOM, screenshot.

No browser-automation package: `--dump-dom` prints the DOM once the page has loaded (the page's scripts run
before its load event, and the HTML page reads its `#expand=` fragment on load), and `--screenshot` writes a
PNG. As root (CI containers) Chromium needs `--no-sandbox`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell")


def find_browser() -> str | None:
    """$JSREPLAY_BROWSER, or the first Chromium on PATH."""
    configured = os.environ.get("JSREPLAY_BROWSER")
    if configured:
        return shutil.which(configured) or (configured if Path(configured).exists() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _base_args(browser: str) -> list[str]:
    args = [browser, "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--mute-audio"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def dump_dom(browser: str, url: str, *, timeout: float = 120, budget_ms: int | None = None) -> str:
    """The DOM after the page loaded (and, with `budget_ms`, after that much virtual time)."""
    args = [*_base_args(browser), "--dump-dom"]
    if budget_ms is not None:
        args.append(f"--virtual-time-budget={budget_ms}")
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"{browser} --dump-dom failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def screenshot(
    browser: str, url: str, path: Path, *, size: tuple[int, int] = (1280, 1100), timeout: float = 120
) -> Path:
    args = [
        *_base_args(browser),
        f"--screenshot={path}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=2000",
    ]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"{browser} --screenshot failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return path
