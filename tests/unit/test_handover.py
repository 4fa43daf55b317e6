"""The relay's handover (pure): handed-over rows are used only when they follow, without a
gap, what the relay knows to be dealt with; any doubt means a read."""

from __future__ import annotations

from backend.mqtt.handover import Handover
from backend.store.outbox import DueRows, RelayItem


def item(row_id: int) -> RelayItem:
    topic = "locker/b/command"
    return RelayItem(row_id, "command", topic, b"{}", 1, False, "b", f"t{row_id}", None)


def known_through(last_id: int) -> Handover:
    """A handover after a complete read that saw rows up to ``last_id``."""
    handover = Handover(enabled=True)
    assert handover.take(100) is None
    handover.handled([item(last_id)], DueRows((item(last_id),), True, last_id))
    return handover


def test_rows_that_follow_are_published_as_handed_in_id_order() -> None:
    handover = known_through(10)
    handover.hand([item(12)])
    handover.hand([item(11)])
    assert [i.id for i in handover.take(100) or ()] == [11, 12]
    assert handover.used == 1
    handover.handled([item(11), item(12)], None)
    handover.hand([item(13)])
    assert [i.id for i in handover.take(100) or ()] == [13]


def test_a_gap_a_repeat_or_too_many_rows_mean_a_read() -> None:
    for handed, limit in (([12], 100), ([11, 13], 100), ([10, 11], 100), ([11, 12], 1)):
        handover = known_through(10)
        handover.hand([item(i) for i in handed])
        assert handover.take(limit) is None, handed
        assert handover.reads >= 1


def test_nothing_is_known_before_a_complete_read() -> None:
    handover = Handover(enabled=True)
    handover.hand([item(1)])
    assert handover.take(100) is None  # first drain: read
    handover.handled([item(1)], DueRows((item(1),), False, 5))  # rows past the limit
    handover.hand([item(6)])
    assert handover.take(100) is None
    handover.handled([], DueRows((), True, 0))  # an empty outbox: the next row is 1
    handover.hand([item(1)])
    assert handover.take(100) is not None


def test_a_drain_that_did_not_end_well_leaves_the_next_one_reading() -> None:
    handover = known_through(10)
    handover.hand([item(11)])
    assert handover.take(100) is not None
    # no handled(): a publish failed or the drain raised
    handover.hand([item(12)])
    assert handover.take(100) is None


def test_forget_drops_what_was_handed_and_known() -> None:
    handover = known_through(10)
    handover.hand([item(11)])
    handover.forget()  # a drop, or another drainer
    assert handover.take(100) is None
    handover.hand([item(11)])
    assert handover.take(100) is None


def test_disabled_never_hands_over() -> None:
    handover = Handover(enabled=False)
    handover.handled([], DueRows((), True, 0))
    handover.hand([item(1)])
    assert handover.take(100) is None
