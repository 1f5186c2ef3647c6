"""`creative-factory eval badcase`: the Badcase Killer measured on a labeled set.

A labeled set is JSON lines, one generated title per row with everything the killer judges
it on (`title`, `original_title`, `selling_points`, `query`, `brand`, `advertiser_id`,
`ad_id`, `category`) and a person's label. Two row formats are read:

* the hand-labeled set (`tests/data/badcase_labeled_real.jsonl`, labeled by reading each
  title against `docs/badcase-labeling-guideline.md`): `label` is `clean` or `bad`,
  `families` lists the rule families a bad title breaks, plus `note`, `source`
  (sample-cycle / amazon-cycle / planted), `catalog` and `guideline_version`;
* the older planted set (`tests/data/badcase_labeled.jsonl`): `label` is `clean` or the one
  family planted, `also` the other families that may rightly fire too (they count as right
  flags for precision; recall counts the planted family only).

The killer judges every row exactly as the stage does (the stage passes its `judge_rows`,
called with the set's own ads as the cycle's active ads, one brand lexicon per `catalog`),
except for the cross-row `duplicate_variant`, which a set of unrelated rows cannot
exercise.

Measures, per family F: recall (rows labeled F that a rule of F flags), the share of them
killed for any reason, precision (rows a rule of F flags that are labeled F); overall: the
share of bad titles killed, false kills (share of clean titles killed) and the precision
of a kill. Every disagreement between label and verdict is listed.

Dev and held-out test: every row belongs to one split (`split_of`), fixed by a seeded hash
of its ad's original title, so all titles of an ad (and of ads sharing a title) fall in one
split: about 60% of the ads are `dev` (rules are developed by reading its disagreements),
40% `test` (held out: measured, not read while writing rules). The measures are reported
for the whole set and for each split; a disagreement names its split.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.stages.badcase_rules import FAMILY_OF, RULES

CROSS_ROW = {"duplicate_variant"}  # needs the cycle's other rows; never fires on a set
# kill_badcases.judge_rows: (generations, config, active ads, progress) -> (reasons, details)
JudgeRows = Callable[..., tuple[list[list[str]], list[list[str]]]]


SPLIT_SEED = "badcase-split-2026"  # fixed once; changing it reshuffles dev and test
TEST_SHARE = 0.4


def split_of(original_title: str | None) -> str:
    """`dev` or `test` for a row, from a seeded hash of its ad's original title (case and
    spacing ignored): deterministic, and one ad's titles never straddle the splits."""
    key = " ".join((original_title or "").casefold().split())
    h = hashlib.sha256(f"{SPLIT_SEED}\0{key}".encode()).hexdigest()[:12]
    return "test" if int(h, 16) / 16 ** 12 < TEST_SHARE else "dev"


def read_labeled(path: Path) -> list[dict[str, Any]]:
    """The set's rows with `label` normalized to clean/bad, `families` (what a rule must
    catch) and `also` (further families a rule may rightly flag) to lists."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labeled set not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "title" not in row or "original_title" not in row:
            raise UserError(f"{path}:{n}: a row needs at least `title` and `original_title`")
        label = row.get("label")
        also = list(row.get("also") or [])
        if label in RULES:  # the planted set: one family planted, `also` the others
            families = [label]
            label = "bad"
        elif label in ("clean", "bad"):
            families = list(row.get("families") or [])
        else:
            raise UserError(f"{path}:{n}: label {label!r} is not clean, bad or one of "
                            f"{list(RULES)}")
        unknown = [f for f in [*families, *also] if f not in RULES]
        if unknown:
            raise UserError(f"{path}:{n}: unknown families {unknown}; expected {list(RULES)}")
        if (label == "bad") != bool(families):
            raise UserError(f"{path}:{n}: a bad row names its families, a clean row none")
        rows.append({**row, "id": str(row.get("id") or f"line{n}"), "label": label,
                     "split": split_of(row.get("original_title")),
                     "families": list(dict.fromkeys(families)),
                     "also": [f for f in dict.fromkeys(also) if f not in families]})
    if not rows:
        raise UserError(f"labeled set {path} has no rows")
    return rows


def killer_verdicts(cfg: Config, rows: list[dict], judge_rows: JudgeRows
                    ) -> list[tuple[list[str], list[str]]]:
    """(reason codes, details) of the killer for each row, judged as the stage judges a
    cycle (`judge_rows`): the rows of one `catalog` are that cycle's generations and active
    ads."""
    import pyarrow as pa

    out: list[tuple[list[str], list[str]] | None] = [None] * len(rows)
    by_catalog: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_catalog.setdefault(str(r.get("catalog") or ""), []).append(i)
    for idx in by_catalog.values():
        gen = {c: [] for c in ("request_id", "ad_id", "advertiser_id", "cluster_id",
                               "cluster_rank", "strategy", "query", "title",
                               "original_title", "selling_points", "brand", "category",
                               "score")}
        ads: dict[str, dict] = {}
        for k, i in enumerate(idx):
            r = rows[i]
            ad = str(r.get("ad_id") or f"labeled-ad-{i}")
            adv = r.get("advertiser_id") or f"labeled-adv-{i}"
            # one cluster per row, so duplicate_variant never ties unrelated rows together
            for c, v in (("request_id", f"labeled-{i}"), ("ad_id", ad), ("advertiser_id", adv),
                         ("cluster_id", k), ("cluster_rank", 1),
                         ("strategy", "query_aware" if r.get("query") else "query_free"),
                         ("query", r.get("query") or None), ("title", r.get("title")),
                         ("original_title", r.get("original_title") or ""),
                         ("selling_points", list(r.get("selling_points") or [])),
                         ("brand", r.get("brand")), ("category", r.get("category")),
                         ("score", 1.0)):
                gen[c].append(v)
            ads.setdefault(ad, {"ad_id": ad, "advertiser_id": adv, "brand": r.get("brand"),
                                "title": r.get("original_title") or "",
                                "category": r.get("category")})
        table = pa.table({**gen, "cluster_id": pa.array(gen["cluster_id"], pa.int32()),
                          "cluster_rank": pa.array(gen["cluster_rank"], pa.int16()),
                          "selling_points": pa.array(gen["selling_points"],
                                                     pa.list_(pa.string())),
                          "score": pa.array(gen["score"], pa.float32())})
        active = pa.Table.from_pylist(list(ads.values()), schema=pa.schema(
            [("ad_id", pa.string()), ("advertiser_id", pa.string()), ("brand", pa.string()),
             ("title", pa.string()), ("category", pa.string())]))
        reasons, details = judge_rows(table, cfg, active, progress=False)
        for i, codes, det in zip(idx, reasons, details, strict=True):
            keep = [c for c in codes if c not in CROSS_ROW]
            out[i] = (keep, [d for d in det if d.split(":", 1)[0] not in CROSS_ROW])
    return out  # type: ignore[return-value]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _measure(rows: list[dict], verdicts: list[tuple[list[str], list[str]]]
             ) -> dict[str, Any]:
    """Verdict, per-family and clean measures and the disagreements of `rows`."""
    fam = {f: {"labeled": 0, "caught": 0, "killed": 0, "flagged": 0, "flagged_right": 0}
           for f in RULES}
    sources: dict[str, Counter] = {}
    clean_reasons: Counter = Counter()
    missed, false_kills, other_reason = [], [], []
    n_bad = n_bad_killed = n_clean = n_clean_killed = 0
    for r, (codes, details) in zip(rows, verdicts, strict=True):
        flagged = {FAMILY_OF.get(c, "other") for c in codes}
        labeled = set(r["families"])
        allowed = labeled | set(r["also"])
        killed = bool(codes)
        sources.setdefault(str(r.get("source") or "unspecified"), Counter())[r["label"]] += 1
        for f in flagged & set(RULES):
            fam[f]["flagged"] += 1
            fam[f]["flagged_right"] += int(f in allowed)
        for f in labeled:
            fam[f]["labeled"] += 1
            fam[f]["caught"] += int(f in flagged)
            fam[f]["killed"] += int(killed)
        entry = {"id": r["id"], "source": r.get("source"), "split": r.get("split"),
                 "title": r.get("title"), "original_title": r.get("original_title"),
                 "query": r.get("query"), "label": r["label"], "families": r["families"],
                 "note": r.get("note") or "",
                 "killer": "killed" if killed else "passed", "reasons": codes,
                 "details": details}
        if r["label"] == "bad":
            n_bad += 1
            n_bad_killed += int(killed)
            if not killed:
                missed.append(entry)
            elif not allowed & flagged:
                other_reason.append(entry)
        else:
            n_clean += 1
            n_clean_killed += int(killed)
            clean_reasons.update(codes)
            if killed:
                false_kills.append(entry)
    families = {f: {**c, "recall": _ratio(c["caught"], c["labeled"]),
                    "kill_rate": _ratio(c["killed"], c["labeled"]),
                    "precision": _ratio(c["flagged_right"], c["flagged"])}
                for f, c in fam.items()}
    return {
        "rows": len(rows),
        "sources": {s: {"clean": c["clean"], "bad": c["bad"]} for s, c in sources.items()},
        "verdict": {"bad": n_bad, "bad_killed": n_bad_killed,
                    "kill_recall": _ratio(n_bad_killed, n_bad),
                    "clean": n_clean, "clean_killed": n_clean_killed,
                    "false_kill_rate": _ratio(n_clean_killed, n_clean),
                    "killed": n_bad_killed + n_clean_killed,
                    "kill_precision": _ratio(n_bad_killed, n_bad_killed + n_clean_killed)},
        "families": families,
        "clean": {"rows": n_clean, "killed": n_clean_killed,
                  "false_kill_rate": _ratio(n_clean_killed, n_clean),
                  "by_reason": dict(clean_reasons)},
        "disagreements": {"missed": missed, "false_kill": false_kills},
        "other_reason": other_reason,
    }


def evaluate(cfg: Config, path: Path, judge_rows: JudgeRows) -> dict[str, Any]:
    """The killer (`judge_rows`) against the labels of the set at `path` (see the module
    docstring): the whole set's measures, and under `splits` those of `dev` and `test`."""
    rows = read_labeled(path)
    verdicts = killer_verdicts(cfg, rows, judge_rows)
    versions = Counter(str(r.get("guideline_version") or "none") for r in rows)
    splits = {}
    for name in ("dev", "test"):
        idx = [i for i, r in enumerate(rows) if r["split"] == name]
        m = _measure([rows[i] for i in idx], [verdicts[i] for i in idx])
        splits[name] = {k: m[k] for k in ("rows", "verdict", "families", "clean")}
    return {"path": str(path), "guideline_versions": dict(versions),
            **_measure(rows, verdicts), "splits": splits}


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def _row_lines(e: dict) -> list[str]:
    what = (f"label {e['label']}" + (f" [{', '.join(e['families'])}]" if e["families"] else "")
            + (f": {e['note']}" if e["note"] else ""))
    killer = e["killer"] + (f" [{'; '.join(e['details'])}]" if e["details"] else "")
    lines = [f"  {e['id']} ({e['source']}) {e['title']!r}"
             + (f"  [{e['split']}]" if e.get("split") else ""),
             f"      original: {e['original_title']!r}"
             + (f"  query: {e['query']!r}" if e.get("query") else ""),
             f"      {what}",
             f"      killer: {killer}"]
    return lines


def _summary_lines(m: dict[str, Any]) -> list[str]:
    v = m["verdict"]
    lines = [
        f"bad titles killed: {v['bad_killed']} of {v['bad']} ({_pct(v['kill_recall']).strip()})"
        f"; clean titles killed (false kills): {v['clean_killed']} of {v['clean']} "
        f"({_pct(v['false_kill_rate']).strip()}); precision of a kill: "
        f"{_pct(v['kill_precision']).strip()}",
        "",
        f"{'family':<12} {'labeled':>7} {'caught':>7} {'recall':>7} {'killed':>7} "
        f"{'flagged':>8} {'right':>6} {'precision':>9}",
    ]
    for f, c in m["families"].items():
        lines.append(f"{f:<12} {c['labeled']:>7} {c['caught']:>7} {_pct(c['recall']):>7} "
                     f"{_pct(c['kill_rate']):>7} {c['flagged']:>8} {c['flagged_right']:>6} "
                     f"{_pct(c['precision']):>9}")
    cl = m["clean"]
    if cl["by_reason"]:
        lines.append(f"false kills by reason: {dict(sorted(cl['by_reason'].items()))}")
    return lines


SPLITS = ("all", "dev", "test")


def format_report(result: dict[str, Any], split: str = "all",
                  disagreements: bool = True) -> str:
    """The `eval badcase` report: summary, per-family table, every disagreement.

    `split`: `dev` or `test` restricts the measures and the listed disagreements to that
    split (rules are developed by reading `--split dev`; the held-out split is read as
    `--split test --summary`, its numbers only); `all` (the default) gives the whole set,
    each split's measures and every disagreement. `disagreements=False`: measures only."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {list(SPLITS)}")
    versions = ", ".join(f"{v} ({n} rows)" for v, n in result["guideline_versions"].items())
    lines = [f"labeled set: {result['path']}: {result['rows']} rows; guideline {versions}"]
    if split == "all":
        for s, c in result["sources"].items():
            lines.append(f"  {s:<14} {c['clean'] + c['bad']:>5} rows: {c['clean']:>4} "
                         f"clean, {c['bad']:>4} bad")
        lines += _summary_lines(result)
    lines.append("  caught: flagged by a rule of the family; killed: killed for any reason; "
                 "right: flagged rows labeled with the family")
    for name, m in (result.get("splits") or {}).items():
        if split not in ("all", name):
            continue
        lines += ["", f"split {name} ({m['rows']} rows; "
                      + ("held out" if name == "test" else "rules developed on it") + "):"]
        lines += _summary_lines(m)
    if not disagreements:
        return "\n".join(lines)
    d = result["disagreements"]
    other = result["other_reason"]
    if split != "all":
        d = {k: [e for e in v if e.get("split") == split] for k, v in d.items()}
        other = [e for e in other if e.get("split") == split]
    lines += ["", f"disagreements: {len(d['missed']) + len(d['false_kill'])} "
                  f"(every one listed)",
              f"killer missed a bad title ({len(d['missed'])}):"]
    for e in d["missed"]:
        lines += _row_lines(e)
    lines.append(f"killer killed a clean title ({len(d['false_kill'])}):")
    for e in d["false_kill"]:
        lines += _row_lines(e)
    lines += ["", f"bad titles killed, but by no rule of their labeled families "
                  f"({len(other)}):"]
    for e in other:
        lines += _row_lines(e)
    return "\n".join(lines)

