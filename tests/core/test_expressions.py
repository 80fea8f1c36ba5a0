"""Filter expressions (docs/expressions.md): the examples, errors as no match, numbers as
doubles, RE2, refusals with a position, and the per-record view checked against a record
read fresh for every evaluation."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cel_expr_python import cel
from hypothesis import given, settings
from hypothesis import strategies as st

from executor_streamer import ExecutorStreamer, InvalidFilter, StreamFilter
from executor_streamer.core.expressions import compile_expression
from executor_streamer.core.filters import compile_filters
from executor_streamer.core.subscription import CloseReason
from executor_streamer.history.records import EventRecord

from ..conftest import HubFactory

FAILED = {
    "type": "COMMAND_FAILED",
    "data": {
        "commandId": "c1",
        "commandName": "click_12",
        "error": {"code": "TIMEOUT", "message": "timed out"},
        "duration": 2500,
    },
    "metadata": {"attempt": 3, "tags": ["a", "b"]},
}
COMPLETED = {
    "type": "COMMAND_COMPLETED",
    "data": {"commandId": "c2", "commandName": "submit_form", "duration": 1200},
}
THOUGHT = {
    "type": "REASONING",
    "data": {"thought": "accept the cookie banner", "confidence": 0.9, "reasoningType": "plan"},
}


async def published(hub: ExecutorStreamer, *events: dict[str, Any]) -> list[EventRecord]:
    records = []
    for event in events:
        records += await hub.publisher.publish_wire("wf-1", event)
    return records


def matching(expression: str, records: list[EventRecord]) -> list[str]:
    test = compile_expression(expression).matches
    return [r.type.value for r in records if test(r)]


class TestTheExamples:
    """docs/expressions.md's examples, against events they should and should not match."""

    async def test_each_matches_what_it_says(self, make_hub: HubFactory) -> None:
        hub = await make_hub()
        records = await published(hub, FAILED, COMPLETED, THOUGHT)
        assert matching('type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"', records) == [
            "COMMAND_FAILED"
        ]
        assert matching('type in ["ERROR", "COMMAND_FAILED"]', records) == ["COMMAND_FAILED"]
        assert matching('type == "COMMAND_COMPLETED" && data.duration > 1000.0', records) == [
            "COMMAND_COMPLETED"
        ]
        either = 'data.commandName.startsWith("submit") || data.thought.contains("cookie")'
        assert matching(either, records) == ["COMMAND_COMPLETED", "REASONING"]
        recent = 'timestamp > now - duration("5m") && data.commandName.matches("^click_[0-9]+$")'
        assert matching(recent, records) == ["COMMAND_FAILED"]
        assert matching('timestamp < now - duration("5m")', records) == []

    async def test_the_envelope_is_there(self, make_hub: HubFactory) -> None:
        hub = await make_hub()
        records = await published(hub, FAILED)
        stream_id = records[0].event.stream_id
        assert matching(f'seq == 1 && sessionId == "wf-1" && streamId == "{stream_id}"', records)
        assert matching('"b" in metadata.tags && has(data.error)', records)
        assert matching('data.commandName.matches("(?i)^CLICK")', records)


class TestErrors:
    async def test_an_expression_that_errs_on_an_event_does_not_match_it(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub()
        records = await published(hub, FAILED, THOUGHT)
        assert matching('data.thought.contains("cookie")', records) == ["REASONING"]
        assert matching("data.duration / 0.0 > 1.0 || data.confidence > 0.5", records) == [
            "COMMAND_FAILED",  # 2500 / 0.0 is +inf, no error
            "REASONING",
        ]
        assert matching('data.error.code == "TIMEOUT" || true', records) == [
            "COMMAND_FAILED",
            "REASONING",  # an error on one side of || does not spoil a true other side
        ]

    async def test_numbers_are_doubles_whatever_the_json_wrote(self, make_hub: HubFactory) -> None:
        hub = await make_hub()
        records = await published(hub, FAILED)
        for expression in (
            "metadata.attempt == 3",
            "metadata.attempt == 3.0",
            "metadata.attempt - 0.5 == 2.5",
            "metadata.attempt / 2.0 == 1.5",
            "data.duration > 2000",
        ):
            assert matching(expression, records) == ["COMMAND_FAILED"], expression

    async def test_regular_expressions_take_linear_time(self, make_hub: HubFactory) -> None:
        """RE2: a pattern that backtracks for ever in Python's ``re`` answers at once over
        50 KB (with ``re`` this test would not finish)."""
        hub = await make_hub()
        text = "a" * 50_000 + "b"
        records = await published(
            hub,
            {"type": "REASONING", "data": {"thought": text, "confidence": 1, "reasoningType": "x"}},
        )
        assert matching('data.thought.matches("(a+)+$")', records) == []
        assert matching('data.thought.matches("^(a+)+b$")', records) == ["REASONING"]


class TestRefusals:
    @pytest.mark.parametrize(
        ("expression", "message", "position"),
        [
            ('type == "A" &&', "Syntax error", 14),
            ('type == "A" &&\n  data.x ==', "Syntax error", 26),
            ("nope == 1", "undeclared reference to 'nope'", 0),
            ("seq - 1", "must be true or false, not INT", 0),
            ("seq > 1.5", "found no matching overload for '_>_'", 4),
            ("data.x.frob()", "undeclared reference to 'frob'", 11),
        ],
    )
    def test_what_does_not_compile_is_refused_with_where(
        self, expression: str, message: str, position: int
    ) -> None:
        with pytest.raises(InvalidFilter) as refused:
            compile_expression(expression)
        details = refused.value.details
        assert details["message"].startswith(message), details
        assert details["position"] == position, details
        assert "container" not in details["message"]

    def test_past_the_length_limit(self) -> None:
        long = " || ".join(['type == "STATUS"'] * 200)
        with pytest.raises(InvalidFilter, match="maxExpressionLength"):
            compile_expression(long)
        assert compile_expression(long, max_length=len(long)).text == long

    async def test_the_hub_refuses_before_subscribing(self, make_hub: HubFactory) -> None:
        hub = await make_hub(limits={"maxExpressionLength": 32})
        await hub.create_stream("wf-1")
        for bad in ("type ==", 'type == "STATUS" || type == "REASONING"'):
            with pytest.raises(InvalidFilter):
                await hub.open_subscription("wf-1", filters=[StreamFilter(expression=bad)])
        assert not hub.streams.resolve("wf-1").subscriptions


class TestBounded:
    """No expression makes evaluations take long or hold much: what could ('+' on
    strings and lists, comprehensions, the list-building macros) is not there, and an
    expression whose one evaluation costs too much CPU is disabled then and there."""

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("data.thought + data.thought == ''", "'+' is not available"),
            ("metadata.tags + metadata.tags == []", "'+' is not available"),
            ("timestamp + duration('1m') > now", "'+' is not available"),
            ("metadata.tags.map(t, t).size() > 0", "'map' is not available"),
            ("metadata.tags.filter(t, true).size() > 0", "'filter' is not available"),
            ("metadata.tags.exists_one(t, t == 'a')", "'exists_one' is not available"),
            ("metadata.tags.exists(t, t == 'a')", "'exists' is not available"),
            ("metadata.tags.all(t, t == 'a')", "'all' is not available"),
        ],
    )
    def test_what_could_amplify_is_refused(self, expression: str, message: str) -> None:
        with pytest.raises(InvalidFilter) as refused:
            compile_expression(expression)
        assert refused.value.details["message"].startswith(message), refused.value.details

    async def test_a_costly_expression_is_disabled_at_its_first_costly_event(
        self, make_hub: HubFactory
    ) -> None:
        """A regular expression that compiles slowly (~100 ms: cel-cpp compiles the pattern
        at every evaluation) stops matching after one event, is refused when asked for
        again, and fan-out to the stream's other subscribers goes on."""
        hub = await make_hub()
        await hub.create_stream("wf-1")
        costly = 'type.matches("\\\\pL{100}") || type == "STATUS"'
        sub = await hub.open_subscription("wf-1", filters=[StreamFilter(expression=costly)])
        others = await hub.open_subscription("wf-1")
        try:
            await published(hub, {"type": "STATUS", "data": {"statusType": "a", "status": "b"}})
            await published(hub, {"type": "STATUS", "data": {"statusType": "a", "status": "c"}})
            assert [r.seq for r in others.drain_records()] == [1, 2]
            assert sub.drain_records() == []
            with pytest.raises(InvalidFilter, match="too costly"):
                await hub.open_subscription("wf-1", filters=[StreamFilter(expression=costly)])
        finally:
            sub.close(CloseReason.UNSUBSCRIBED)
            others.close(CloseReason.UNSUBSCRIBED)

    async def test_views_are_let_go_once_delivered(self, make_hub: HubFactory) -> None:
        hub = await make_hub()
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1", filters=[StreamFilter(expression="seq > 0")])
        try:
            await published(hub, FAILED)
            [record] = sub.drain_records()
            assert record.view is None  # the event read into CEL values is not kept
        finally:
            sub.close(CloseReason.UNSUBSCRIBED)


# -- the per-record view against a fresh record per evaluation ---------------------------

EXPRESSIONS = [
    'type == "STATUS"',
    "metadata.n > 2.0",
    'has(data.status) && data.status.contains("x")',
    "seq % 2 == 0",
    'metadata.n == 1 || data.statusType == "b"',
    "size(data) > 2",
    "metadata.n / 2.0 >= 1.0",
]
event = st.fixed_dictionaries(
    {
        "type": st.just("STATUS"),
        "data": st.fixed_dictionaries(
            {
                "statusType": st.sampled_from(["a", "b"]),
                "status": st.text("xyz", min_size=1, max_size=4),
            }
        ),
        "metadata": st.fixed_dictionaries({"n": st.integers(0, 4)}),
    }
)


_T = cel.Type
REFERENCE = cel.NewEnv(
    container="event",
    variables={
        "event.type": _T.STRING,
        "seq": _T.INT,
        "timestamp": _T.TIMESTAMP,
        "sessionId": _T.STRING,
        "streamId": _T.STRING,
        "data": _T.MAP,
        "metadata": _T.MAP,
        "now": _T.TIMESTAMP,
    },
)


def as_cel_reads_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: as_cel_reads_json(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def reference(text: str, payload: bytes) -> bool:
    """The simple way: the library itself on the event's JSON, nothing kept."""
    event = orjson.loads(payload)
    value = REFERENCE.compile(text).eval(
        data={
            "event.type": event["type"],
            "seq": event["seq"],
            "timestamp": datetime.fromisoformat(event["timestamp"]),
            "sessionId": event["sessionId"],
            "streamId": event["streamId"],
            "data": as_cel_reads_json(event["data"]),
            "metadata": as_cel_reads_json(event.get("metadata") or {}),
            "now": datetime.now(UTC),
        }
    )
    return value.type() == _T.BOOL and value.value() is True


@settings(max_examples=50, deadline=None)
@given(st.lists(event, min_size=1, max_size=8), st.lists(st.sampled_from(EXPRESSIONS), max_size=4))
async def test_the_kept_view_answers_as_a_fresh_record_does(
    events: list[dict[str, Any]], expressions: list[str]
) -> None:
    """Filters sharing a record's view (built by the first, kept on the record) decide
    as the library does on the event's JSON with nothing kept: the optimisation changes
    no answer, whichever filters evaluate a record and in whatever order."""
    hub = ExecutorStreamer()
    await hub.start()
    try:
        records = [(await hub.publisher.publish_wire("wf-1", e))[0] for e in events]
        for text in expressions:
            kept = compile_filters([StreamFilter(expression=text)])
            assert kept is not None
            for record in records:
                plain = reference(text, record.payload)
                assert kept(record) == plain, (text, orjson.loads(record.payload))
    finally:
        await hub.stop()


# -- what a search may skip: Expression.may_match against evaluation ------------------------

ATOMS = [
    'type == "STATUS"',
    'type != "ERROR"',
    'type in ["ERROR", "REASONING"]',
    'type.startsWith("S")',
    'data.status.contains("x")',
    "has(data.status)",
    "has(data.thought) && data.confidence > 0.4",
    "metadata.n > 2.0",
    'sessionId == "wf-1"',
    'sessionId.matches("^wf-[2-3]$")',
    'streamId.startsWith("str_")',
    "seq % 2 == 0",
    "timestamp < now",
    "true",
    "false",
]
expression_texts = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) && ({p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) || ({p[1]})"),
        inner.map(lambda e: f"!({e})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]}) ? ({t[1]}) : ({t[2]})"),
    ),
    max_leaves=6,
)
any_event = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("STATUS"),
            "data": st.fixed_dictionaries(
                {"statusType": st.just("a"), "status": st.text("xy", min_size=1, max_size=3)}
            ),
            "metadata": st.fixed_dictionaries({"n": st.integers(0, 4)}),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("REASONING"),
            "data": st.fixed_dictionaries(
                {
                    "thought": st.just("t"),
                    "confidence": st.sampled_from([0.2, 0.9]),
                    "reasoningType": st.just("p"),
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("ERROR"), "data": st.just({"code": "E", "message": "m"})}
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["wf-1", "wf-2", "wf-3"]), any_event), min_size=1),
    st.lists(expression_texts, min_size=1, max_size=5),
)
async def test_what_may_match_says_cannot_match_never_matches(
    events: list[tuple[str, dict[str, Any]]], texts: list[str]
) -> None:
    """A search skips the types and streams for which ``may_match`` says no, so it must
    never say no for an event the expression matches (the library on the event's JSON,
    nothing kept, is the judge). And it must say no somewhere: for ``type == "STATUS"``
    every other type. Mutation-checked: taking an error for "no" (``value.value() is
    not True``) fails it at once."""
    hub = ExecutorStreamer()
    await hub.start()
    try:
        records = [(await hub.publisher.publish_wire(wf, e))[0] for wf, e in events]
        for text in texts:
            expression = compile_expression(text)
            for record in records:
                event = record.event
                if reference(text, record.payload):
                    assert expression.may_match(type=event.type.value), (text, event.type)
                    assert expression.may_match(
                        streamId=event.stream_id, sessionId=event.session_id
                    ), (text, event.session_id)
    finally:
        await hub.stop()


def test_may_match_rules_out_what_the_expression_excludes() -> None:
    expression = compile_expression(
        'type in ["ERROR", "COMMAND_FAILED"] && sessionId.startsWith("team-a:") && data.x > 1.0'
    )
    assert expression.may_match(type="ERROR") and expression.may_match(type="COMMAND_FAILED")
    assert not expression.may_match(type="STATUS")
    assert expression.may_match(sessionId="team-a:1", streamId="str_1")
    assert not expression.may_match(sessionId="team-b:1", streamId="str_1")
    either = compile_expression('type == "STATUS" || data.x > 1.0')
    assert either.may_match(type="REASONING")  # data could still make it true
    assert compile_expression('!(type == "STATUS")').may_match(type="ERROR")
    assert not compile_expression('!(type == "STATUS")').may_match(type="STATUS")


def test_a_costly_probe_disables_its_expression() -> None:
    """A search probes an expression once per stream (``may_match``): a probe over the
    CPU limit disables the expression as an evaluation would, so a thousand streams do
    not each pay for it, and the text is refused from then on."""
    text = 'sessionId.matches("\\\\pL{100}\\\\pL{100}\\\\pL{100}") && type == "STATUS"'
    expression = compile_expression(text)
    started = time.thread_time()
    answers = [expression.may_match(sessionId=f"wf-{n}", streamId="s") for n in range(50)]
    assert answers == [False] * 50 and expression.costly is not None
    assert time.thread_time() - started < 5  # one costly probe, not fifty
    with pytest.raises(InvalidFilter, match="too costly"):
        compile_expression(text)
