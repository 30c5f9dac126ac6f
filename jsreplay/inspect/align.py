"""Sequence alignment: which item of the old sequence corresponds to which item of the new one.

Identical items are matched by a longest-common-subsequence pass over their keys, so one added call does not
make everything after it differ. Between two matched stretches, the leftover items are paired by a small
edit-distance alignment whose substitution cost is "how different are these two" (the caller's `cost`), so
a changed call pairs with its counterpart and a new call shows as added, whatever their order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from difflib import SequenceMatcher
from typing import TypeVar

T = TypeVar("T")

#: An old item missing from new, or new missing from old, costs this much; a pair that differs in more than
#: twice this many places is reported as removed + added rather than as changed.
GAP_COST = 3
#: Larger unmatched stretches are paired in order (the quadratic alignment would cost too much).
MAX_GAP_ALIGN = 48

#: Up to this many (old x new) items, equal runs are found by difflib's longest-common-subsequence search;
#: above it that search can take quadratic time per block (a long group whose every fourth call differs took
#: a minute), so long sequences are walked in step, resynchronising within `RESYNC_WINDOW` items.
EXACT_LCS_LIMIT = 256 * 256
RESYNC_WINDOW = 32

Pair = tuple[int | None, int | None]
Opcode = tuple[str, int, int, int, int]


def align(
    old: Sequence[T],
    new: Sequence[T],
    key: Callable[[T], Hashable],
    cost: Callable[[T, T], int],
) -> list[Pair]:
    """Pairs `(i, j)` in order: both set for corresponding items (equal or changed), `(i, None)` for an item
    only in `old`, `(None, j)` for one only in `new`."""
    old_keys = [key(x) for x in old]
    new_keys = [key(x) for x in new]
    if old_keys == new_keys:
        return [(i, i) for i in range(len(old))]
    pairs: list[Pair] = []
    opcodes: list[Opcode]
    if len(old_keys) * len(new_keys) <= EXACT_LCS_LIMIT:
        opcodes = list(SequenceMatcher(None, old_keys, new_keys, autojunk=False).get_opcodes())
    else:
        opcodes = _resync_opcodes(old_keys, new_keys)
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            pairs.extend(zip(range(i1, i2), range(j1, j2), strict=True))
        else:
            pairs.extend(_align_gap(old, new, i1, i2, j1, j2, cost))
    return _pair_moved(old_keys, new_keys, old, new, pairs, cost)


def _resync_opcodes(a: list[Hashable], b: list[Hashable]) -> list[Opcode]:
    """difflib-style opcodes from walking both sequences in step: equal runs are taken as they come; at a
    difference, the nearest point where the two agree again (fewest items skipped, within the window) ends a
    "replace" stretch, which the caller aligns item by item. Linear time for local differences."""
    ops: list[Opcode] = []
    i = j = 0
    n, m = len(a), len(b)
    while i < n and j < m:
        if a[i] == b[j]:
            i0, j0 = i, j
            while i < n and j < m and a[i] == b[j]:
                i, j = i + 1, j + 1
            ops.append(("equal", i0, i, j0, j))
            continue
        step = _resync(a, b, i, j)
        ops.append(("replace", i, i + step[0], j, j + step[1]))
        i, j = i + step[0], j + step[1]
    if i < n or j < m:
        ops.append(("replace", i, n, j, m))
    return ops


def _resync(a: list[Hashable], b: list[Hashable], i: int, j: int) -> tuple[int, int]:
    """How many items of each to skip from (i, j) until they agree again; a window of each when they don't."""
    n, m = len(a), len(b)
    for skipped in range(1, 2 * RESYNC_WINDOW + 1):
        for di in range(max(0, skipped - RESYNC_WINDOW), min(skipped, RESYNC_WINDOW) + 1):
            dj = skipped - di
            if i + di < n and j + dj < m and a[i + di] == b[j + dj]:
                return di, dj
    return min(RESYNC_WINDOW, n - i), min(RESYNC_WINDOW, m - j)


def _pair_moved(
    old_keys: list[Hashable],
    new_keys: list[Hashable],
    old: Sequence[T],
    new: Sequence[T],
    pairs: list[Pair],
    cost: Callable[[T, T], int],
) -> list[Pair]:
    """Pair an item left only in `old` with one left only in `new` when they are nearly the same, wherever they
    are: a call that changed and also moved (its longer life now overlaps a neighbour) is one changed call.

    Identical items are not paired this way: an identical call in another place is a reorder, and stays
    reported as removed here and added there.
    """
    removed = [i for i, j in pairs if j is None and i is not None]
    added = [j for i, j in pairs if i is None and j is not None]
    if not removed or not added or len(removed) * len(added) > MAX_GAP_ALIGN * MAX_GAP_ALIGN:
        return pairs
    candidates = sorted((cost(old[i], new[j]), i, j) for i in removed for j in added if old_keys[i] != new_keys[j])
    moved: dict[int, int] = {}
    taken: set[int] = set()
    for c, a, b in candidates:
        if c > 2 * GAP_COST:
            break
        if a not in moved and b not in taken:
            moved[a] = b
            taken.add(b)
    if not moved:
        return pairs
    out: list[Pair] = []
    for i, j in pairs:
        if i is not None and j is None and i in moved:
            out.append((i, moved[i]))
        elif i is not None or j not in taken:
            out.append((i, j))
    return out


def _align_gap(
    old: Sequence[T],
    new: Sequence[T],
    i1: int,
    i2: int,
    j1: int,
    j2: int,
    cost: Callable[[T, T], int],
) -> list[Pair]:
    n, m = i2 - i1, j2 - j1
    if n == 0 or m == 0:
        return [(i, None) for i in range(i1, i2)] + [(None, j) for j in range(j1, j2)]
    if n == 1 and m == 1:
        return [(i1, j1)]  # the one call of its kind on each side: the same call, however much it changed
    if n > MAX_GAP_ALIGN or m > MAX_GAP_ALIGN:
        common = min(n, m)
        paired: list[Pair] = [(i1 + k, j1 + k) for k in range(common)]
        return paired + [(i, None) for i in range(i1 + common, i2)] + [(None, j) for j in range(j1 + common, j2)]
    # Needleman-Wunsch: d[a][b] = cheapest alignment of old[i1:i1+a] with new[j1:j1+b].
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(1, n + 1):
        d[a][0] = a * GAP_COST
    for b in range(1, m + 1):
        d[0][b] = b * GAP_COST
    subst = [[min(cost(old[i1 + a], new[j1 + b]), 2 * GAP_COST + 1) for b in range(m)] for a in range(n)]
    for a in range(1, n + 1):
        for b in range(1, m + 1):
            d[a][b] = min(
                d[a - 1][b - 1] + subst[a - 1][b - 1],
                d[a - 1][b] + GAP_COST,
                d[a][b - 1] + GAP_COST,
            )
    # Walk back from the end. On a tie, take the gap: the items left over then sit at the end, and the
    # pairs are the earliest items in order (the natural reading of "one more at the end").
    out: list[Pair] = []
    a, b = n, m
    while a > 0 or b > 0:
        if b > 0 and d[a][b] == d[a][b - 1] + GAP_COST:
            out.append((None, j1 + b - 1))
            b -= 1
        elif a > 0 and d[a][b] == d[a - 1][b] + GAP_COST:
            out.append((i1 + a - 1, None))
            a -= 1
        else:
            out.append((i1 + a - 1, j1 + b - 1))
            a, b = a - 1, b - 1
    out.reverse()
    return out
