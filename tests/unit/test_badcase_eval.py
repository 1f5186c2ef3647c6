"""`eval badcase` on the hand-labeled set of real generations
(tests/data/badcase_labeled_real.jsonl, labeled by reading each title against
docs/badcase-labeling-guideline.md): the set is complete and carries what the killer judges,
and the report lists every disagreement between label and verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jobs.platform.config import load_config
from jobs.platform.errors import UserError
from jobs.stages.badcase_eval import read_labeled
from jobs.stages.badcase_rules import RULES
from jobs.stages.kill_badcases import evaluate_labeled, format_eval

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "badcase_labeled_real.jsonl"
GUIDELINE = ROOT / "docs" / "badcase-labeling-guideline.md"
JUDGED = ("title", "original_title", "selling_points", "query", "brand", "advertiser_id",
          "ad_id", "category", "catalog")


def guideline_version() -> str:
    m = re.search(r"guideline: (v\d+ \([0-9-]+\))", GUIDELINE.read_text(encoding="utf-8"))
    assert m, "the guideline states its version"
    return m.group(1)


def test_real_set_is_labeled_against_the_current_guideline():
    raw = [json.loads(line) for line in REAL.read_text(encoding="utf-8").splitlines()]
    assert len(raw) >= 1000
    assert {r["guideline_version"] for r in raw} == {guideline_version()}
    by_source = {s: [r for r in raw if r["source"] == s]
                 for s in ("sample-cycle", "amazon-cycle", "planted")}
    assert sum(map(len, by_source.values())) == len(raw)
    assert len(by_source["sample-cycle"]) >= 500 and len(by_source["amazon-cycle"]) >= 300
    assert 100 <= sum(r["label"] == "bad" for r in by_source["planted"]) <= 150
    assert len({(r["title"], r["original_title"]) for r in raw}) == len(raw)  # de-duplicated
    for r in raw:
        assert all(k in r for k in JUDGED), r["id"]
        assert isinstance(r["selling_points"], list), r["id"]
        assert r["label"] in ("clean", "bad"), r["id"]
        assert set(r["families"]) <= set(RULES), r["id"]
        assert (r["label"] == "bad") == bool(r["families"]), r["id"]
        assert r["label"] == "clean" or r["note"], r["id"]  # a bad row says why
    # honest personalized rewrites: interest framing, labeled clean
    assert sum(r["label"] == "clean" and "interest framing" in r["note"]
               for r in by_source["planted"]) >= 25


@pytest.fixture(scope="module")
def real_result():
    return evaluate_labeled(load_config(environ={}), REAL)


def test_report_lists_every_disagreement(real_result):
    result = real_result
    d = result["disagreements"]
    assert all(e["label"] == "bad" and e["killer"] == "passed" and not e["reasons"]
               for e in d["missed"])
    assert all(e["label"] == "clean" and e["killer"] == "killed" and e["reasons"]
               for e in d["false_kill"])
    v = result["verdict"]
    assert len(d["missed"]) == v["bad"] - v["bad_killed"]
    assert len(d["false_kill"]) == v["clean_killed"] == result["clean"]["killed"]
    assert v["bad"] + v["clean"] == result["rows"] == len(read_labeled(REAL))
    report = format_eval(result)
    assert f"guideline {guideline_version()}" in report
    listed = re.findall(r"^  (\S+) \((?:sample-cycle|amazon-cycle|planted)\) ", report, re.M)
    disagreeing = [e["id"] for e in d["missed"] + d["false_kill"]]
    assert set(disagreeing) <= set(listed)  # every one, with its title and original
    for e in d["missed"][:5] + d["false_kill"][:5]:
        assert repr(e["title"]) in report and repr(e["original_title"]) in report
    fams = result["families"]
    for f, c in fams.items():
        assert c["caught"] <= c["labeled"] and c["flagged_right"] <= c["flagged"], f
    assert sum(c["labeled"] for c in fams.values()) >= v["bad"]


def write_set(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


AD = {"original_title": "Voltaro Waterproof Wireless Earbuds, Compact",
      "selling_points": ["Up to 30 hours of playback", "IPX7 water resistance"],
      "query": None, "brand": "Voltaro", "advertiser_id": "adv-1", "ad_id": "ad-1",
      "category": "electronics", "catalog": "sample", "guideline_version": "test"}


def test_a_clean_title_the_killer_kills_and_a_bad_one_it_passes_are_listed(tmp_path):
    rows = [
        # the original unchanged: labeled clean here on purpose, the killer kills it
        {**AD, "id": "t-clean-killed", "source": "planted", "label": "clean", "families": [],
         "title": AD["original_title"], "note": ""},
        # grounded, readable: both agree
        {**AD, "id": "t-clean-passed", "source": "planted", "label": "clean", "families": [],
         "title": "Voltaro Waterproof Wireless Earbuds, Up to 30 hours of playback",
         "note": ""},
        # labeled bad by a reader (say, for a reason no rule knows): the killer passes it
        {**AD, "id": "t-bad-passed", "source": "planted", "label": "bad",
         "families": ["degenerate"], "note": "test: a defect no rule knows",
         "title": "Voltaro Waterproof Wireless Earbuds, IPX7 water resistance"},
        # the original unchanged, labeled bad/format: both agree
        {**AD, "id": "t-bad-killed", "source": "planted", "label": "bad",
         "families": ["format"], "note": "same as the original",
         "title": AD["original_title"].upper()},
    ]
    result = evaluate_labeled(load_config(environ={}), write_set(tmp_path / "s.jsonl", rows))
    d = result["disagreements"]
    assert [e["id"] for e in d["false_kill"]] == ["t-clean-killed"]
    assert "same_as_original" in d["false_kill"][0]["reasons"]
    assert [e["id"] for e in d["missed"]] == ["t-bad-passed"]
    assert result["families"]["format"] == {**result["families"]["format"], "labeled": 1,
                                            "caught": 1, "flagged": 2, "flagged_right": 1}
    assert result["verdict"]["false_kill_rate"] == 0.5
    report = format_eval(result)
    assert "killer missed a bad title (1):" in report
    assert "killer killed a clean title (1):" in report
    assert "t-clean-killed" in report and "same_as_original" in report
    assert "test: a defect no rule knows" in report


def test_labels_are_checked(tmp_path):
    bad = {**AD, "id": "x", "title": "Voltaro Earbuds", "label": "bad", "families": []}
    with pytest.raises(UserError, match="names its families"):
        read_labeled(write_set(tmp_path / "a.jsonl", [bad]))
    odd = {**AD, "id": "x", "title": "Voltaro Earbuds", "label": "bad", "families": ["tone"]}
    with pytest.raises(UserError, match="unknown families"):
        read_labeled(write_set(tmp_path / "b.jsonl", [odd]))
    with pytest.raises(UserError, match="not found"):
        read_labeled(tmp_path / "missing.jsonl")


def test_dev_and_held_out_test_splits_by_ad(real_result):
    from jobs.stages.badcase_eval import split_of

    rows = read_labeled(REAL)
    by_ad: dict[str, set[str]] = {}
    for r in rows:
        assert r["split"] == split_of(r["original_title"]) in ("dev", "test")
        by_ad.setdefault(r["ad_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_ad.values())  # one ad's titles in one split
    assert split_of("Voltaro Earbuds") == split_of("  voltaro  EARBUDS ")  # seeded, stable
    n_test = sum(r["split"] == "test" for r in rows)
    assert 0.3 <= n_test / len(rows) <= 0.5
    splits = real_result["splits"]
    assert splits["dev"]["rows"] + splits["test"]["rows"] == real_result["rows"]
    for key in ("bad", "clean", "bad_killed", "clean_killed"):
        assert (splits["dev"]["verdict"][key] + splits["test"]["verdict"][key]
                == real_result["verdict"][key])
    report = format_eval(real_result)
    assert "split dev (" in report and "split test (" in report
    listed = re.findall(r"^  \S+ \((?:sample-cycle|amazon-cycle|planted)\) .*  \[(dev|test)\]$",
                        report, re.M)
    d = real_result["disagreements"]
    assert len(listed) >= len(d["missed"]) + len(d["false_kill"])


def test_report_restricted_to_one_split(real_result):
    # rules are developed on `--split dev`; the held-out split is read as its measures only
    from jobs.stages.badcase_eval import format_report

    dev = format_report(real_result, "dev")
    assert "split dev (" in dev and "split test (" not in dev
    listed = re.findall(r"^  \S+ \((?:sample-cycle|amazon-cycle|planted)\) .*\[(\w+)\]$", dev,
                        re.M)
    assert listed and set(listed) == {"dev"}
    test = format_report(real_result, "test", disagreements=False)
    assert "split test (" in test and "split dev (" not in test
    assert "disagreements:" not in test and "killer:" not in test
    with pytest.raises(UserError):  # `eval badcase --split train`: a one-line error
        format_report(real_result, "train")
