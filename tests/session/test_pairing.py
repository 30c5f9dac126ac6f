"""How the recorded ends of tunnels pair up, and which end is served."""

from __future__ import annotations

from jsreplay.session.tunnels import TunnelSide, better_carrier, pair_ends

C, E, U = TunnelSide.CLIENT, TunnelSide.EXPORTER, TunnelSide.UNKNOWN


def test_client_and_exporter_ends_of_a_token_pair_in_order() -> None:
    ends = [("t1", E), ("t2", C), ("t1", C), ("t2", E), ("t1", E), ("t1", C)]
    assert pair_ends(ends) == [(1, 3), (2, 0), (5, 4)]


def test_probes_pair_among_themselves_and_strays_stand_alone() -> None:
    ends = [("p", U), ("p", U), ("q", C), (None, C), (None, E)]
    assert pair_ends(ends) == [(0, 1), (2, None), (3, None), (4, None)]


def test_the_client_end_is_served_then_the_exporter_end_then_the_first() -> None:
    assert better_carrier(None, U)
    assert better_carrier(U, E) and better_carrier(E, C) and better_carrier(U, C)
    assert not better_carrier(C, C) and not better_carrier(C, E) and not better_carrier(E, U)
