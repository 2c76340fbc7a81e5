from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tracekit.report.json import RESULT_FORMAT, result_schema, summary_json

jsonschema = pytest.importorskip("jsonschema")


def test_summary_json_round_trips_and_ends_with_newline(summary):
    data = summary_json(summary)
    assert data.endswith(b"\n") and not data.endswith(b"\n\n")
    assert json.loads(data) == summary


def test_summary_json_is_independent_of_key_insertion_order(summary):
    reordered = json.loads(json.dumps(summary), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(reordered) != list(summary)
    assert summary_json(reordered) == summary_json(summary)


def test_summary_json_is_a_fixed_point(summary):
    data = summary_json(summary)
    assert summary_json(json.loads(data)) == data


def test_summary_json_sorts_keys_at_every_level(summary):
    def check(value):
        if isinstance(value, dict):
            assert list(value) == sorted(value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(json.loads(summary_json(summary)))


def test_summary_json_keeps_non_ascii_text_readable():
    data = summary_json({"trace": {"path": "traces/über.parquet"}})
    assert "über".encode() in data


def test_numpy_counts_become_plain_numbers(summary):
    with_numpy = dict(summary, decisions=np.int64(summary["decisions"]))
    assert summary_json(with_numpy) == summary_json(summary)


@pytest.mark.parametrize("bad", [math.nan, math.inf, object()])
def test_values_that_are_not_json_are_refused(summary, bad):
    with pytest.raises((ValueError, TypeError)):
        summary_json(dict(summary, decisions=bad))


def test_fixture_summary_follows_the_schema(summary):
    assert summary["format"] == RESULT_FORMAT
    jsonschema.validate(json.loads(summary_json(summary)), result_schema())


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(result_schema())


@pytest.mark.parametrize(
    "break_it",
    [
        lambda s: s.pop("matched"),
        lambda s: s.update(format="tracekit-result/2"),
        lambda s: s.update(unknown=-1),
        lambda s: s["groups"][0].pop("socks"),
        lambda s: s["groups"][0]["load"].update({"sk3": 1}),
        lambda s: s["groups"][0].update(prog="bpf"),
        lambda s: s["hosts"]["h1"].pop("unknown"),
        lambda s: s["mismatches"][0].pop("explanation"),
        lambda s: s["mismatches"][0].update(verdict="match"),
        lambda s: s["trace"]["metadata"].update({"tracekit.kernel": 6}),
    ],
)
def test_schema_rejects_broken_summaries(summary, break_it):
    break_it(summary)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(summary, result_schema())


def test_result_schema_returns_a_fresh_copy():
    result_schema()["required"].clear()
    assert "verdict" in result_schema()["required"]
