# SPDX-License-Identifier: Apache-2.0
"""torcx.records: the small value classes of the boot path (instead of dataclasses)."""

from __future__ import annotations

import pytest

from torcx.records import FrozenRecordError, Record


class Point(Record):
    __slots__ = ("x", "y", "tags", "note")
    _defaults = {"y": 0, "note": None}
    _factories = {"tags": list}
    _hidden = ("note",)


class Frozen(Record):
    __slots__ = ("a", "b")
    _defaults = {"b": ""}
    _frozen = True


def test_construction_defaults_and_factories():
    """Positional and keyword fields, defaults, and a fresh mutable default per record."""
    p, q = Point(1, tags=["t"]), Point(x=2)
    assert (p.x, p.y, p.tags, p.note) == (1, 0, ["t"], None)
    assert q.tags == [] and Point(3).tags is not q.tags
    p.y = 5
    assert p.y == 5


def test_bad_construction_is_a_type_error():
    """Unknown, duplicate and missing fields are refused like a dataclass refuses them."""
    with pytest.raises(TypeError, match="unexpected"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="missing"):
        Point()
    with pytest.raises(TypeError):
        Point(1, 2, [], None, 5)


def test_equality_repr_and_hash():
    """Equal by value and type; the repr leaves hidden fields out; only frozen ones hash."""
    assert Frozen("x") == Frozen("x", "") and Frozen("x") != Frozen("y")
    assert Frozen("x") != ("x", "")
    assert len({Frozen("x"), Frozen("x")}) == 1
    assert repr(Point(1, note="secret")) == "Point(x=1, y=0, tags=[])"
    with pytest.raises(TypeError):
        hash(Point(1))


def test_frozen_refuses_assignment():
    """A frozen record refuses every assignment, like a frozen dataclass."""
    f = Frozen("x")
    with pytest.raises(FrozenRecordError):
        f.a = "y"
    with pytest.raises(AttributeError):
        f.b = "z"
