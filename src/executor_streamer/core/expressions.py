"""Filter expressions: CEL, evaluated by Google's cel-cpp (docs/expressions.md).

Every use of the ``cel_expr_python`` library is in this module: its Python API is young
(pyproject.toml bounds it), and ``tests/core/test_expressions.py`` holds what the hub
relies on. An expression sees one event as its wire JSON shows it: ``type``, ``seq``,
``timestamp`` (a CEL timestamp), ``sessionId``, ``streamId``, ``data`` and ``metadata``
(maps), and ``now``. Numbers in ``data`` and ``metadata`` are doubles, as CEL reads JSON.

Why this library (figures in docs/expressions.md): the type checker refuses unknown names,
functions and non-boolean results when the expression is compiled, with a position;
``matches`` is RE2 (linear time, whatever the text); numbers compare across int and
double; evaluation takes microseconds. What could make one evaluation slow or large is
left out of the language (``_CONFIG``), and an evaluation that costs too much CPU anyway
disables its expression (:data:`COSTLY_SECONDS`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from time import thread_time
from typing import Any

import orjson
import structlog
from cel_expr_python import cel

from ..errors import InvalidFilter
from ..history.records import EventRecord

MAX_EXPRESSION_LENGTH = 2048
"""The default of ``limits.maxExpressionLength``."""
COSTLY_SECONDS = 0.01
COSTLY_SECONDS_PER_MIB = 0.1
"""CPU time past which one evaluation disables its expression: 10 ms, and 100 ms more per
MiB of the event (what reading a large event's JSON into CEL values takes). What remains
of CEL here runs each call once per evaluation, but a regular expression is compiled at
every evaluation, and some compile slowly (``\\pL{100}``: ~100 ms): such an expression is
caught at its first costly event, never evaluated again, and refused if asked for again."""

_log = structlog.get_logger("executor_streamer.expressions")
_T = cel.Type
_CONFIG = """
container: "event"
stdlib:
  # What would let one evaluation take seconds or gigabytes: '+' concatenates strings and
  # lists (a chain of them over a 1 MiB field copies tens of GB), 'map' and 'filter'
  # build lists, and a comprehension repeats the work of its body up to the library's
  # budget of ~10,000 iterations (each on up to 1 MiB of event). Without them every call
  # in an expression runs once per evaluation (docs/expressions.md, "Bounded").
  exclude_macros: [map, filter, exists_one, all, exists]
  exclude_functions:
    - name: "_+_"
variables:
  # 'type' is a name of CEL's own, which cannot be declared again: declared in the
  # container, the bare name still resolves to the event's type.
  - {name: "event.type", type: "string"}
  - {name: "seq", type: "int"}
  - {name: "timestamp", type: "timestamp"}
  - {name: "sessionId", type: "string"}
  - {name: "streamId", type: "string"}
  - {name: "data", type: "map<dyn,dyn>"}
  - {name: "metadata", type: "map<dyn,dyn>"}
  - {name: "now", type: "timestamp"}
"""
_ENV = cel.NewEnv(config=cel.NewEnvConfigFromYaml(_CONFIG))
_NO_PLUS = (
    "'+' is not available: no addition or concatenation in a filter (for a + 1.0 > b, "
    "write a > b - 1.0)"
)
_ISSUE = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_LEFT_OUT_MACRO = re.compile(r"\.\s*(map|filter|exists_one|exists|all)\s*\(\s*$")
"""Right before a macro's variable: the compiler, not knowing the macro, reports the
variable as an unknown name."""


class Expression:
    """A compiled expression; :meth:`matches` is its predicate over records."""

    __slots__ = ("_program", "costly", "text")

    def __init__(self, text: str, program: Any) -> None:
        self.text = text
        self._program = program
        self.costly: str | None = None
        """Why the expression was disabled (one evaluation over :data:`COSTLY_SECONDS`):
        it no longer matches anything, and compiling its text again is refused."""

    def matches(self, record: EventRecord) -> bool:
        """Whether the expression is true of ``record``'s event. An expression that errs
        on an event (a missing field, a wrong type) does not match it.

        The answer is kept with the record's view: subscribers that filter by the same
        text share this compiled expression (:func:`compile_expression`), so a hundred
        viewers of one search evaluate it once per event."""
        view = _view(record)
        known = view.answers.get(self)
        if known is None:
            known = view.answers[self] = self.costly is None and self._evaluate(view, record)
        return known

    def may_match(self, **known: str) -> bool:
        """False only if the expression is false for every event whose ``type``,
        ``sessionId`` or ``streamId`` (those given) have these values, whatever the rest,
        so a search need not read such events (``core/search.py``).

        Why that is sound: the variables not given are left unbound, and reading one is an
        error; a CEL error passes through every operator but ``&&`` and ``||``, which
        answer false and true whatever their other side once one side is false or true.
        So a definite false with some variables unknown is false for any values of them
        (checked over random expressions and events in tests/core/test_expressions.py).
        ``now`` stays unknown too: the evaluation comes later."""
        if self.costly is not None:
            return False
        bound = {("event.type" if name == "type" else name): value for name, value in known.items()}
        started = thread_time()
        try:
            value = self._program.eval(_ENV.Activation(bound))
        except RuntimeError:
            return True
        finally:
            spent = thread_time() - started
            if spent > COSTLY_SECONDS:  # a search probes once per stream: never let it pile up
                self._disable(spent, COSTLY_SECONDS, None)
        if self.costly is not None:
            return False
        return not (value.type() == _T.BOOL and value.value() is False)

    def _evaluate(self, view: _View, record: EventRecord) -> bool:
        started = thread_time()  # CPU time: a busy machine does not make a filter costly
        try:
            value = self._program.eval(view.activation)
        except RuntimeError:  # a library limit (its iteration budget) reached
            answer = False
        else:
            answer = value.type() == _T.BOOL and value.value() is True
        spent = thread_time() - started
        allowed = COSTLY_SECONDS + COSTLY_SECONDS_PER_MIB * len(record.payload) / (1 << 20)
        if spent > allowed:
            self._disable(spent, allowed, len(record.payload))
            return False
        return answer

    def _disable(self, spent: float, allowed: float, size: int | None) -> None:
        what = "" if size is None else f" for an event of {size} bytes"
        self.costly = (
            f"too costly: one evaluation took {spent * 1000:.0f} ms of CPU "
            f"(allowed: {allowed * 1000:.0f} ms{what})"
        )
        _log.warning("filter_expression_disabled", expression=self.text[:200], why=self.costly)


class _View:
    """What expressions see of one event, and what each has answered about it."""

    __slots__ = ("activation", "answers")

    def __init__(self, activation: Any) -> None:
        self.activation = activation
        self.answers: dict[Expression, bool] = {}


def compile_expression(text: str, max_length: int | None = MAX_EXPRESSION_LENGTH) -> Expression:
    """``text`` compiled, or :class:`InvalidFilter` saying why not (and where)."""
    if max_length is not None and len(text) > max_length:
        raise InvalidFilter(f"longer than {max_length} characters (limits.maxExpressionLength)")
    compiled = _compiled(text)
    if compiled.costly is not None:
        raise InvalidFilter(compiled.costly)
    return compiled


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Expression:
    # Keyed by the whole expression, which is all that compiling reads: subscribers that
    # send the same filter share one program.
    try:
        program = _ENV.compile(text)
    except (RuntimeError, ValueError) as exc:  # 0.1.3 raises RuntimeError
        raise _refusal(text, str(exc)) from None
    returns = program.return_type()
    if returns != _T.BOOL and returns != _T.DYN:
        raise InvalidFilter(f"must be true or false, not {returns.name()}", (0, 1, 1))
    return Expression(text, program)


def _refusal(text: str, report: str) -> InvalidFilter:
    """The compiler's first issue, with its position (``<input>:LINE:COL: message``)."""
    found = _ISSUE.search(report)
    if found is None:
        return InvalidFilter(report.strip().splitlines()[0] if report.strip() else "invalid")
    line, column = int(found.group(1)), int(found.group(2))
    lines = text.split("\n")
    offset = sum(len(before) + 1 for before in lines[: line - 1]) + column - 1
    message = found.group(3).replace(" (in container 'event')", "")
    macro = _LEFT_OUT_MACRO.search(text[:offset])
    if message == "undeclared reference to '_+_'":
        message = _NO_PLUS
    elif macro is not None and message.startswith("undeclared reference to"):
        message = (
            f"'{macro.group(1)}' is not available in a filter (it repeats its work for every "
            "element): for membership, write 'x' in list"
        )
    return InvalidFilter(message, (min(offset, len(text)), line, column))


def _view(record: EventRecord) -> _View:
    """What an expression sees of ``record``: built once per record (every subscription
    filtering it reads the same one) and kept on it until it is filtered
    (``history.records.drop_views``)."""
    built = record.view
    if not isinstance(built, _View):
        event = orjson.loads(record.payload)
        activation = _ENV.Activation(
            {
                "event.type": event["type"],
                "seq": event["seq"],
                "timestamp": datetime.fromisoformat(event["timestamp"]),
                "sessionId": event["sessionId"],
                "streamId": event["streamId"],
                "data": _doubles(event.get("data") or {}),
                "metadata": _doubles(event.get("metadata") or {}),
                "now": datetime.now(UTC),
            }
        )
        built = record.view = _View(activation)
    return built


def _doubles(value: Any) -> Any:
    """JSON as CEL reads it: every number a double (``2500`` and ``2500.0`` alike)."""
    if isinstance(value, dict):
        return {key: _doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_doubles(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
