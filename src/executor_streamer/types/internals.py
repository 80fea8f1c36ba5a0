"""Every use of pydantic's private parts, in one place.

A stored event is built from values the hub made and checked itself, so it skips
validation. ``model_construct`` does that too, but looks every field up by alias on the
way (a third of a batched publish's cost, bench/README.md); :func:`construct_trusted`
fills the instance's slots directly instead. The slots are pydantic's own
(``BaseModel.__slots__``), not a documented API: pyproject.toml bounds pydantic below 3,
:func:`verify` checks the slots and that the result equals ``model_construct``'s, the hub
calls it at start, and ``tests/types/test_internals.py`` runs it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["construct_trusted", "missing_parts", "verify"]

Model = TypeVar("Model", bound=BaseModel)

_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def construct_trusted(cls: type[Model], values: dict[str, Any]) -> Model:
    """``cls.model_construct(**values)`` for a model without extra fields, private
    attributes or defaults left out of ``values``; ``values`` becomes the instance's own."""
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class _Probe(BaseModel):
    name: str
    count: int = 0


def missing_parts() -> list[str]:
    """What :func:`construct_trusted` relies on and the installed pydantic no longer has."""
    slots = getattr(BaseModel, "__slots__", ())
    missing = [f"pydantic BaseModel.__slots__ {slot!r}" for slot in _SLOTS if slot not in slots]
    if missing:
        return missing
    made = construct_trusted(_Probe, {"name": "a", "count": 1})
    expected = _Probe.model_construct(name="a", count=1)
    if made != expected or made.model_fields_set != expected.model_fields_set:
        missing.append("pydantic: construct_trusted no longer equals model_construct")
    return missing


def verify() -> None:
    """Raise, naming what is missing and the installed version, if a part is gone."""
    missing = missing_parts()
    if missing:
        import pydantic

        raise RuntimeError(
            f"private parts of pydantic the hub uses are gone ({', '.join(missing)}) with "
            f"pydantic {pydantic.VERSION}: install a version pyproject.toml allows, or "
            "adapt executor_streamer/types/internals.py"
        )
