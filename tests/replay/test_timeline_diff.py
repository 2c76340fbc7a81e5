"""`timeline._diff` names, for any change of a group's live array and closed section, what the
slot-by-slot definition names: moves, joins and returns by new slot, then sockets that went to the
closed section or left, by old slot, then those that left the closed section."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracekit.replay.timeline import _diff


def by_definition(old, new) -> list:
    (old_live, old_closed), (new_live, new_closed) = old, new
    rows = []
    for slot, sk in enumerate(new_live):
        if slot < len(old_live) and old_live[slot] == sk:
            continue
        if sk in old_live:
            rows.append((sk, "moved", old_live.index(sk), slot))
        else:
            rows.append((sk, "reopened" if sk in old_closed else "joined", None, slot))
    for slot, sk in enumerate(old_live):
        if sk not in new_live:
            rows.append((sk, "closed" if sk in new_closed else "left", slot, None))
    for sk in old_closed:
        if sk not in new_closed and sk not in new_live:
            rows.append((sk, "left", None, None))
    return rows


@st.composite
def groups(draw):
    """A group's (live, closed): distinct sockets, as the kernel keeps them."""
    socks = draw(st.lists(st.integers(0, 40), max_size=34, unique=True))
    cut = draw(st.integers(0, len(socks)))
    return tuple(socks[:cut]), tuple(socks[cut:])


@given(groups(), groups())
def test_diff_follows_the_definition(old, new):
    assert _diff(old, new) == by_definition(old, new)


@given(groups(), st.data())
def test_stop_listen_moves_the_last_socket_into_the_hole(old, data):
    live, closed = old
    if not live:
        return
    hole = data.draw(st.integers(0, len(live) - 1))
    new_live = live[:hole] + live[-1:] + live[hole + 1:-1] if hole < len(live) - 1 else live[:-1]
    new = (new_live, closed + (live[hole],))
    rows = _diff(old, new)
    assert rows == by_definition(old, new)
    assert rows[-1] == (live[hole], "closed", hole, None)
