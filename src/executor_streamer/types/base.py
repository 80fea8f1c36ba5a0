"""Base model and timestamp type shared by every wire type.

JSON on the wire is camelCase; Python uses snake_case. Both spellings are accepted
on input. Timestamps are RFC 3339 UTC with milliseconds and ``Z``.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel, to_snake

MAX_JSON_OBJECT_KEYS = 1000


@functools.lru_cache(maxsize=256)
def format_timestamp(value: datetime) -> str:
    """``2026-01-01T10:00:00.123Z``: UTC, millisecond precision. Cached: the events of a
    batch share one stamp, and replays format the same stamps again."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _as_utc(value: datetime) -> datetime:
    # A timestamp without an offset is taken as UTC rather than as local time:
    # the hub runs in containers whose local zone is arbitrary.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise ValueError("is outside the range of UTC dates (years 1 to 9999)") from None


Timestamp = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""An aware UTC datetime that serializes as RFC 3339 with milliseconds and ``Z``."""


def utc_now() -> datetime:
    """Now, truncated to milliseconds so it round-trips through the wire format unchanged."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


class WireModel(BaseModel):
    """A frozen model with camelCase aliases that also accepts snake_case names."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase dict, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def normalize_keys(value: Any) -> Any:
    """Recursively rewrite camelCase dict keys to snake_case.

    Lets a file say ``maxHistorySize`` and an environment variable say
    ``MAX_HISTORY_SIZE`` for the same setting without the two colliding when merged.
    """
    if isinstance(value, dict):
        return {to_snake(str(k)): normalize_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_keys(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``; nested dicts merge, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ConfigModel(WireModel):
    """A configuration section: it may refuse keys the original specification names but
    this hub does not implement. (Only configuration models carry the check: on every
    model it cost each published event a Python call per validation.)"""

    unsupported: ClassVar[dict[str, str]] = {}
    """camelCase keys the original specification names here that this hub does not
    implement, and why: refused with that reason rather than accepted and ignored."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if cls.unsupported and isinstance(data, dict):
            for key, reason in cls.unsupported.items():
                if key in data or to_snake(key) in data:
                    raise ValueError(f"{key} is not supported: {reason}")
        return data
