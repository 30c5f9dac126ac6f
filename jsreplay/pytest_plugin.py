"""pytest plugin (entry point `pytest11`): serve cassettes to tests. Filled in by the replay work."""

from __future__ import annotations
