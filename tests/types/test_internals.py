"""pydantic's private parts that types/internals.py uses are there, and a missing one is named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from executor_streamer.types import internals


class Sample(BaseModel):
    name: str
    count: int
    note: str | None


def test_every_private_part_is_there() -> None:
    """Under the installed pydantic, construct_trusted's slots are all there."""
    assert internals.missing_parts() == []
    internals.verify()


@given(st.text(), st.integers(), st.none() | st.text())
def test_construct_trusted_is_model_construct(name: str, count: int, note: str | None) -> None:
    """The shortcut builds what model_construct builds, fields set included."""
    made = internals.construct_trusted(Sample, {"name": name, "count": count, "note": note})
    expected = Sample.model_construct(name=name, count=count, note=note)
    assert made == expected
    assert made.model_fields_set == expected.model_fields_set
    assert made.model_dump_json() == expected.model_dump_json()


def test_a_missing_slot_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """If pydantic renames a slot, verify() names it and the installed version."""
    monkeypatch.setattr(
        BaseModel, "__slots__", ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__")
    )
    assert internals.missing_parts() == ["pydantic BaseModel.__slots__ '__pydantic_private__'"]
    with pytest.raises(RuntimeError, match=r"__pydantic_private__.*pydantic \d"):
        internals.verify()
