"""Revision parsing, ordering and increment (prserv.revision, prserv.policy)."""

import random

import pytest

import prserv
from prserv import policy
from prserv.revision import InvalidRevisionError, is_revision, optional_key, revision_key

ORDERED = ["0", "1", "1.0", "1.0.0", "1.0.1", "1.1", "1.2", "1.9", "1.10", "1.10.0", "1.20", "2",
           "2.0", "9", "10", "11", "100"]


def test_numeric_total_order():
    shuffled = ORDERED[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=revision_key) == ORDERED


@pytest.mark.parametrize("smaller, greater", [("1", "1.0"), ("1.3", "1.20"), ("9", "10"), ("1.9", "1.10"),
                                               ("2.0.3", "2.0.10"), ("1.0", "2")])
def test_comparisons(smaller, greater):
    assert prserv.revision_smaller(smaller, greater)
    assert prserv.revision_greater(greater, smaller)
    assert not prserv.revision_greater(smaller, greater)
    assert prserv._revision_greater_or_equal(greater, smaller)
    assert not prserv._revision_greater_or_equal(smaller, greater)
    assert prserv._revision_greater_or_equal(smaller, smaller)


@pytest.mark.parametrize("value, increased", [("0", "1"), ("1", "2"), ("9", "10"), ("1.9", "1.10"),
                                               ("2.0.3", "2.0.4"), ("99", "100"), (5, "6")])
def test_increase_revision(value, increased):
    assert prserv.increase_revision(value) == increased


@pytest.mark.parametrize("value", ["1.a", "1.", "", "+7", " 7", "1_0", "1.٣"])
def test_increase_revision_rejects(value):
    with pytest.raises(ValueError):
        prserv.increase_revision(value)


@pytest.mark.parametrize("value", ["0", "12", "1.0.3", "10.20.30"])
def test_is_revision(value):
    assert is_revision(value)


@pytest.mark.parametrize("value", ["01", "+7", "1'", "", "1.", ".1", "1..2", " 1", "1 ", "1.01", "٣",
                                   "1e3", None, 5, "1" * 300])
def test_not_revision(value):
    assert not is_revision(value)
    if isinstance(value, str):
        with pytest.raises(InvalidRevisionError):
            revision_key(value)


def test_policy_local_value():
    assert policy.local_value(None, None, False) == (0,)
    assert policy.local_value((2,), None, True) == (3,)
    assert policy.local_value((10,), (9,), False) == (11,)   # D1: 9 < 10 numerically
    assert policy.local_value((10,), (9,), True) == (9,)
    assert policy.local_value((1, 0), (1, 0), False) == (1, 0)


def test_policy_next_child():
    assert policy.next_child((1,), None) == (1, 0)
    assert policy.next_child((1,), 4) == (1, 5)


def test_policy_chained_value_asks_facts_in_reference_order():
    facts = {}
    asked = []
    order = [policy.UPSTREAM_MAX, policy.UPSTREAM_HAS_PACKAGE, policy.UPSTREAM_CHECKSUM,
             policy.UPSTREAM_MAX_AGAIN]
    answers = {policy.UPSTREAM_MAX: (1,), policy.UPSTREAM_HAS_PACKAGE: True,
               policy.UPSTREAM_CHECKSUM: None, policy.UPSTREAM_MAX_AGAIN: (1,)}
    while True:
        decision = policy.chained_value(None, (1, 1), {(1,): 1}, False, facts)
        if not isinstance(decision, policy.Need):
            break
        asked.append(decision.fact)
        facts[decision.fact] = answers[decision.fact]
    assert asked == order
    assert decision == (1, 2)


def test_policy_chained_value_known_locally():
    up = {policy.UPSTREAM_MAX: (2,)}
    need = policy.chained_value((1, 1), (1, 1), {}, False, dict(up))
    assert isinstance(need, policy.Need) and need.fact == policy.UPSTREAM_CHECKSUM
    assert policy.chained_value((1, 1), (1, 1), {}, False, {**up, policy.UPSTREAM_CHECKSUM: None}) == (2, 0)
    assert policy.chained_value((1, 1), (1, 1), {}, False, {**up, policy.UPSTREAM_CHECKSUM: (1,)}) == (2,)
    # D4: local max 1.0 above x1's 1 -> 1.1, upstream max 1 is not above it.
    assert policy.chained_value((1,), (1, 0), {}, False, {policy.UPSTREAM_MAX: (1,)}) == (1, 1)
    # D7: package unknown upstream (max null): the local value stands.
    assert policy.chained_value((0,), (0,), {}, False, {policy.UPSTREAM_MAX: None}) == (0,)
    # history: first value, no upstream question at all.
    assert policy.chained_value((1, 0), (2, 0), {}, True, {}) == (1, 0)


@pytest.mark.parametrize("value, key", [
    ("0", (0,)), ("17", (17,)), ("1.20", (1, 20)), ("2.0.3", (2, 0, 3)), ("9" * 256, (int("9" * 256),)),
    ("01", None), ("\u00b2", None), ("\u0663", None), ("", None), ("1.", None), ("+7", None),
    (" 7", None), ("9" * 257, None), (None, None), (7, None),
])
def test_optional_key_plain_integers_and_dotted_values(value, key):
    assert optional_key(value) == key
