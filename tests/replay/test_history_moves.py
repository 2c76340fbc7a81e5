"""`history._moves` names, for any change of a group's live array, what the slot-by-slot
definition names: each socket that now sits in a slot it did not hold, then each one that left."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracekit.replay.history import Change, _change, _moves


def by_definition(old: tuple[int, ...], new: tuple[int, ...]) -> tuple:
    old_slot = {x: i for i, x in enumerate(old)}
    new_slot = {x: i for i, x in enumerate(new)}
    joined = [(x, old_slot.get(x), i) for i, x in enumerate(new) if old_slot.get(x) != i]
    left = [(x, i, None) for x, i in old_slot.items() if x not in new_slot]
    return tuple(joined + left)


arrays = st.lists(st.integers(0, 40), max_size=34, unique=True).map(tuple)


@given(arrays, arrays)
def test_moves_follow_the_definition(old, new):
    assert _moves(old, new) == by_definition(old, new)


@given(arrays, st.data())
def test_a_detach_moves_the_last_socket_into_the_hole(old, data):
    if not old:
        return
    hole = data.draw(st.integers(0, len(old) - 1))
    new = old[:hole] + old[-1:] + old[hole + 1:-1] if hole < len(old) - 1 else old[:-1]
    moves = _moves(old, new)
    assert moves == by_definition(old, new)
    assert (old[hole], hole, None) in moves


@given(st.integers(0, 10**6), st.sampled_from(["bind", "close"]), st.one_of(st.none(), st.integers(0, 40)),
       arrays, arrays)
def test_a_change_recorded_is_the_change_its_init_makes(seq, event, sk, old, new):
    made, built = _change(seq, event, sk, old, new), Change(seq, event, sk, old, new)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert list(made.__dict__.items()) == list(built.__dict__.items())
    assert made.moves == built.moves and made.describe() == built.describe()
