"""Which unaccepted connections give way to a new one (transport.oldest_to_evict), the rule
the single-process receiver and the receive pool share."""

from __future__ import annotations

from types import SimpleNamespace

from dicom_deid.node.transport import oldest_to_evict


def conns(*addresses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(address=a, n=i) for i, a in enumerate(addresses)]


def test_the_oldest_from_the_same_address_gives_way_first():
    pending = conns("a", "b", "a", "a")
    evicted = oldest_to_evict(pending, "a", per_address=3, total=64)
    assert [c.n for c in evicted] == [0]


def test_then_the_oldest_of_all_while_the_total_is_reached():
    pending = conns("a", "b", "c", "d")
    assert [c.n for c in oldest_to_evict(pending, "e", per_address=8, total=3)] == [0, 1]
    # The per-address victims count toward the total too.
    assert [c.n for c in oldest_to_evict(pending, "b", per_address=1, total=3)] == [1, 0]


def test_nothing_gives_way_below_both_limits_and_the_input_is_left_alone():
    pending = conns("a", "b")
    assert oldest_to_evict(pending, "a", per_address=2, total=3) == []
    oldest_to_evict(pending, "a", per_address=1, total=1)
    assert [c.n for c in pending] == [0, 1]
