"""Kubernetes label selectors, as the cluster matches leases and ListExporters filters against exporter labels."""

from __future__ import annotations

import re
from collections.abc import Mapping

# A Kubernetes label selector: "k=v", "k==v", "k!=v", "k in (a,b)", "k notin (a,b)", "k", "!k", comma-separated.
_Requirement = tuple[str, str, frozenset[str]]
_KEY = r"[A-Za-z0-9_./-]+"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^)]*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def parse_selector(selector: str) -> list[_Requirement]:
    requirements: list[_Requirement] = []
    for part in re.split(r",(?![^()]*\))", selector or ""):
        part = part.strip()
        if not part:
            continue
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(1), m.group(2), values))
        elif m := _CMP_RE.match(part):
            requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif m := _EXISTS_RE.match(part):
            requirements.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
        else:
            raise ValueError(f"cannot parse label selector {selector!r} near {part!r}")
    return requirements


def selector_matches(requirements: list[_Requirement], labels: Mapping[str, str]) -> bool:
    for key, op, values in requirements:
        value = labels.get(key)
        ok = {
            "=": value is not None and value in values,
            "in": value is not None and value in values,
            "!=": value is None or value not in values,
            "notin": value is None or value not in values,
            "exists": value is not None,
            "!exists": value is None,
        }[op]
        if not ok:
            return False
    return True
