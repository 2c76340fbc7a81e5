from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pandas as pd

from tracekit.report.junit import render_junit
from tracekit.report.view import describe_decision

from .conftest import DECISIONS, FakeReplay, summarize


def parse(data: bytes) -> ET.Element:
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(data)


def test_one_suite_per_host_one_case_per_group(replay):
    root = parse(render_junit(replay))
    groups = replay.summary["groups"]
    assert [s.get("name") for s in root.findall("testsuite")] == sorted(replay.summary["hosts"])
    for suite in root.findall("testsuite"):
        host = suite.get("name")
        assert [c.get("name") for c in suite.findall("testcase")] == [g["group"] for g in groups if g["host"] == host]
        assert all(c.get("classname") == f"tracekit.{host}" for c in suite.findall("testcase"))


def test_counts_agree_with_the_elements(replay):
    root = parse(render_junit(replay))
    for element in [root, *root.findall("testsuite")]:
        cases = list(element.iter("testcase"))
        assert element.get("tests") == str(len(cases))
        assert element.get("failures") == str(sum(c.find("failure") is not None for c in cases))
        assert element.get("skipped") == str(sum(c.find("skipped") is not None for c in cases))
    assert root.get("failures") == str(sum(g["mismatched"] > 0 for g in replay.summary["groups"]))


def test_failures_list_every_mismatch_with_its_explanation(replay, decisions):
    root = parse(render_junit(replay))
    for group in replay.summary["groups"]:
        case = root.find(f"testsuite[@name='{group['host']}']/testcase[@name='{group['group']}']")
        failure = case.find("failure")
        mine = [d for d in decisions if (d["host"], d["group"], d["verdict"]) == (group["host"], group["group"], "mismatch")]
        assert (failure is not None) == bool(mine)
        if mine:
            assert failure.get("message") == f"{len(mine)} of {group['decisions']} decisions mismatched"
            for record in mine:
                assert describe_decision(record) in failure.text
                assert record["explanation"] in failure.text


def test_unknowns_go_to_system_out_with_reasons(replay, decisions):
    root = parse(render_junit(replay))
    case = root.find("testsuite[@name='h2']/testcase")
    reasons = [d["reason"] for d in decisions if d["host"] == "h2" and d["verdict"] == "unknown"]
    out = case.find("system-out").text
    assert out.startswith(f"unknown: {len(reasons)} decisions (")
    for reason in set(reasons):
        assert f"{reason}: {reasons.count(reason)}" in out


def test_a_group_with_only_unknown_decisions_is_skipped():
    records = [d for d in copy.deepcopy(DECISIONS) if d["host"] != "h2" or d["verdict"] == "unknown"]
    root = parse(render_junit(FakeReplay(summarize(records), pd.DataFrame(records))))
    case = root.find("testsuite[@name='h2']/testcase")
    assert case.find("skipped") is not None and case.find("failure") is None
    assert root.find("testsuite[@name='h2']").get("skipped") == "1"


def test_summary_only_lists_the_first_mismatches_and_says_more_exist(decisions):
    summary = summarize(decisions, max_mismatches=1)
    root = parse(render_junit(summary))
    failure = root.find(".//failure")
    assert describe_decision(summary["mismatches"][0]) in failure.text
    assert f"({summary['mismatched'] - 1} more not in the summary; see --results)" in failure.text


def test_clean_replay_has_no_failures(clean_replay):
    root = parse(render_junit(clean_replay))
    assert root.get("failures") == "0" and root.find(".//failure") is None


def test_output_is_deterministic(replay):
    shuffled = FakeReplay(replay.summary, replay.decisions.sample(frac=1, random_state=1))
    assert render_junit(replay) == render_junit(replay) == render_junit(shuffled)
