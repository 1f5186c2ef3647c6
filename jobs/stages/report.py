"""Stage 9, report: one page per cycle that a person can read, from every stage's manifest.

Writes `{lake}/cycles/{cycle_id}/report/`:

    report.html   self-contained (plots embedded): stage durations, rows in and out of every
                  stage, quarantine reasons, cluster sizes, requests per strategy, coverage,
                  reuse share, tokens/s, kill reasons, sample variants beside their originals
    report.md     the short summary (headline counts, failures, where things are)
    report.json   the numbers behind both
    *.png         the plots, also as files

Stages that have not run are listed as missing; the report never fails because a stage
is absent. `publish_library` uploads this folder beside the library version.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.lake import StageOutput, fingerprint_code, read_manifest, run_stage, stage_dir
from jobs.stages.personalization import (
    CycleClicks,
    cross_cluster_fidelity,
    distinct_titles,
    plan_kept,
    query_uptake,
    shuffled_interests,
)
from jobs.stages.publish_library import gate_failures, library_table, missing_library_columns

STAGE = "report"
STAGES = ["extract_features", "embed_items", "embed_users", "cluster_users", "match_ads",
          "generate", "kill_badcases"]
SAMPLE_ADS = 5
GLANCE_ADS = 3  # ads shown with each cluster's title beside that cluster's interests
log = logging.getLogger(__name__)


def _manifests(cfg: Config, cycle_id: str) -> dict[str, dict | None]:
    return {s: read_manifest(stage_dir(cfg.lake, cycle_id, s)) for s in STAGES}


def stage_seconds(m: dict) -> float:
    """Seconds of work: sharded stages sum their shards (their commit is quick)."""
    if isinstance(m.get("per_shard"), list):
        return float(m.get("duration_s", 0)) + sum(float(s.get("seconds", 0))
                                                     for s in m["per_shard"])
    for key in ("counts", "totals"):
        if isinstance(m.get(key), dict) and "seconds" in m[key]:
            return float(m[key]["seconds"]) + float(m.get("duration_s", 0))
    return float(m.get("duration_s", 0))


def _path(m: dict | None, output: str) -> Path | None:
    if not m or output not in m.get("outputs", {}):
        return None
    p = Path(m["outputs"][output]["path"])
    return p if p.exists() else None


def collect(cfg: Config, cycle_id: str) -> dict[str, Any]:
    """The numbers of the report, from the manifests and a few small tables."""
    ms = _manifests(cfg, cycle_id)
    data: dict[str, Any] = {"cycle_id": cycle_id,
                            "stages": {s: None if m is None else {
                                "duration_s": round(stage_seconds(m), 2),
                                "finished_at": m.get("finished_at"),
                                "rows": {k: v.get("rows") for k, v in m["outputs"].items()}}
                                for s, m in ms.items()}}
    fe = ms["extract_features"]
    if fe:
        rec = fe.get("reconciliation", {})
        data["inputs"] = {t: {k: rec[t].get(k) for k in ("rows_in", "accepted", "quarantined")}
                          for t in ("ads", "clicks") if t in rec}
        data["quarantine_reasons"] = {f"{t}:{r}": n for t in ("ads", "clicks")
                                      for r, n in rec.get(t, {}).get("reasons", {}).items()}
    cu = ms["cluster_users"]
    if cu:
        data["clusters"] = {k: cu["summary"].get(k) for k in (
            "users", "k_requested", "k_fitted", "k_active", "refit_reason", "mean_drift",
            "size_min", "size_median", "size_max")}
        data["clusters"]["centroid_version"] = cu["centroid_version"]
        data["clusters"]["merged_for_privacy"] = len(cu["summary"].get("merged_into", {}))
        cents = _path(cu, "centroids")
        data["cluster_sizes"] = pq.read_table(cents, columns=["size"]).column(
            "size").to_pylist() if cents else []
    ma = ms["match_ads"]
    if ma:
        data["matching"] = ma["summary"]
        cov = _path(ma, "coverage")
        data["coverage"] = pq.read_table(cov).to_pydict() if cov else {}
    gen = ms["generate"]
    if gen:
        data["generation"] = {k: v for k, v in gen.items() if k in (
            "counts", "backend", "model_version", "shards", "per_shard")}
    kb = ms["kill_badcases"]
    if kb:
        data["kills"] = {k: v for k, v in kb.items() if k in (
            "summary", "counts", "kill_counts", "kills_by_reason", "reasons")}
    data["samples"] = _samples(ms)
    data["personalization"] = personalization(ms)
    data["publish_gate"] = publish_gate(cfg, cycle_id, ms)
    return data


def publish_gate(cfg: Config, cycle_id: str, ms: dict[str, dict | None]) -> dict | None:
    """The verdict publish_library's gate will give on this cycle (same suites, same
    thresholds), so the report says why a cycle was not published."""
    passing = _path(ms["kill_badcases"], "passing")
    if passing is None or ms["match_ads"] is None:
        return None
    table = pq.read_table(passing)
    missing = missing_library_columns(table)
    if missing:  # publish_library fails on it too, with this reason
        return {"passes": False, "numbers": None,
                "failures": [f"passing rows lack {missing}"]}
    failures, results = gate_failures(cfg, cycle_id, library_table(table, cycle_id))
    return {"passes": not failures, "failures": failures,
            "numbers": results.get("cycle_numbers")}


def personalization(ms: dict[str, dict | None]) -> dict[str, Any] | None:
    """The passing variants judged against what each cluster's users clicked
    (jobs/stages/personalization.py): distinct titles per ad, cross-cluster fidelity beside
    its control (each cluster judged against another cluster's interests: ~50% whatever
    the titles), query uptake, and a few ads at a glance."""
    paths = {"passing": _path(ms["kill_badcases"], "passing"),
             "assignments": _path(ms["cluster_users"], "assignments"),
             "sequences": _path(ms["extract_features"], "user_sequences"),
             "items": _path(ms["extract_features"], "items")}
    if any(p is None for p in paths.values()):
        return None
    clicks = CycleClicks(paths["items"], paths["sequences"])
    space = clicks.space
    a = pq.read_table(paths["assignments"], columns=["user_id", "cluster_id"]).to_pydict()
    interests = clicks.interests(dict(zip(a["user_id"], a["cluster_id"], strict=True)))
    rows = pq.read_table(paths["passing"], columns=[
        "ad_id", "cluster_id", "strategy", "query", "title", "original_title",
        "selling_points"]).to_pylist()
    free: dict[str, dict[int, str]] = {}
    aware: dict[tuple[str, int], dict] = {}
    for r in rows:
        if r["strategy"] == "query_free":
            free.setdefault(r["ad_id"], {})[r["cluster_id"]] = r["title"]
        else:
            aware[(r["ad_id"], r["cluster_id"])] = r
    uptake = query_uptake(
        {"query": r["query"], "sources": [r["original_title"], *(r["selling_points"] or [])],
         "query_aware": r["title"], "query_free": free[ad][c]}
        for (ad, c), r in aware.items() if c in free.get(ad, {}))
    mean_interest = np.mean(list(interests.values()), axis=0) if interests else None
    plans: dict[tuple[str, int], list[str]] = {}
    req_path = _path(ms["match_ads"], "generation_requests")
    if req_path is not None and "plan" in pq.read_schema(req_path).names:
        for r in pq.read_table(req_path, columns=["ad_id", "cluster_id", "strategy",
                                                  "plan"]).to_pylist():
            if r["strategy"] == "query_free":
                plans[(r["ad_id"], r["cluster_id"])] = r["plan"] or []
    glance = []
    for ad in sorted(ad for ad, by_c in free.items() if len(by_c) >= 3)[:GLANCE_ADS]:
        orig = next(r["original_title"] for r in rows if r["ad_id"] == ad)
        glance.append({"ad_id": ad, "original_title": orig, "clusters": [
            {"cluster_id": c, "title": t, "plan": "; ".join(plans.get((ad, c), [])),
             "interests": space.summary(interests[c], against=mean_interest,
                                        exclude=clicks.brand_words) if c in interests else ""}
            for c, t in sorted(free[ad].items())]})
    return {"distinct": distinct_titles({ad: list(by_c.values()) for ad, by_c in free.items()}),
            "fidelity": cross_cluster_fidelity(free, interests, space),
            "fidelity_control": cross_cluster_fidelity(free, shuffled_interests(interests),
                                                       space),
            "query_uptake": uptake, "at_a_glance": glance,
            "plan_kept": plan_kept((t, plans.get((ad, c))) for ad, by_c in free.items()
                                   for c, t in by_c.items())}


def _samples(ms: dict[str, dict | None]) -> list[dict]:
    """A few ads with their variants (passing ones when the Badcase Killer has run)."""
    src = _path(ms["kill_badcases"], "passing") or _path(ms["generate"], "generations")
    if src is None:
        return []
    cols = ["ad_id", "cluster_id", "strategy", "query", "title", "original_title"]
    t = pq.read_table(src)
    if not set(cols) <= set(t.column_names):
        return []
    df = t.select(cols).to_pandas()
    ads = sorted(df.ad_id.unique())[:SAMPLE_ADS]
    out = []
    for ad in ads:
        g = df[df.ad_id == ad].sort_values(["strategy", "cluster_id"])
        out.append({"ad_id": ad, "original_title": g.original_title.iloc[0],
                    "variants": g[["cluster_id", "strategy", "query", "title"]].to_dict("records")})
    return out


# -------------------------------------------------------------------------------- plots

def _plots(data: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}

    def save(name: str, fig) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        pngs[name] = buf.getvalue()

    def barh(name: str, title: str, values: dict[str, float], xlabel: str) -> None:
        if not values:
            return
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(values) + 1.2))
        labels = list(values)
        ax.barh(labels, [values[k] for k in labels], color="#4c72b0")
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        save(name, fig)

    barh("durations", "Stage durations", {s: v["duration_s"] for s, v in data["stages"].items()
                                          if v}, "seconds")
    barh("quarantine", "Quarantined rows by reason", data.get("quarantine_reasons", {}), "rows")
    if data.get("cluster_sizes"):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.hist(data["cluster_sizes"], bins=min(40, len(data["cluster_sizes"])), color="#55a868")
        ax.set_title("Cluster sizes (users per cluster)")
        ax.set_xlabel("users")
        ax.set_ylabel("clusters")
        save("cluster_sizes", fig)
    barh("requests", "Generation requests by strategy",
         data.get("matching", {}).get("requests_by_strategy", {}), "requests")
    cov = data.get("coverage") or {}
    if cov.get("category"):
        barh("coverage", "Users whose cluster gets a request, by category",
             dict(zip(cov["category"], cov["share"], strict=True)), "share of users")
    kills = _kill_counts(data)
    barh("kills", "Variants killed by reason", kills, "variants")
    return pngs


def _kill_counts(data: dict[str, Any]) -> dict[str, int]:
    k = data.get("kills") or {}
    for key in ("kills_by_reason", "kill_counts"):
        if isinstance(k.get(key), dict):
            return k[key]
    s = k.get("summary") or {}
    for key in ("kills_by_reason", "kill_counts", "reasons"):
        if isinstance(s.get(key), dict):
            return s[key]
    return {}


# ------------------------------------------------------------------------------- render

def _table(rows: list[list[Any]], head: list[str]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                      for r in rows) + "</table>")


def headline(data: dict[str, Any]) -> list[tuple[str, Any]]:
    stages = data["stages"]
    m = data.get("matching", {})
    out: list[tuple[str, Any]] = []
    for t, v in data.get("inputs", {}).items():
        out.append((f"{t} rows in / accepted / quarantined",
                    f"{v['rows_in']:,} / {v['accepted']:,} / {v['quarantined']:,}"))
    if "clusters" in data:
        c = data["clusters"]
        out.append(("users clustered", f"{c['users']:,} in {c['k_active']} clusters "
                                       f"(refit: {c['refit_reason'] or 'no'})"))
    if m:
        out.append(("generation requests", f"{m['requests']:,} for {m['ads_matched']:,} ads "
                                           f"({m['work_saved_ratio']}x fewer than one per user)"))
    c = {k: v for k, v in ((data.get("generation") or {}).get("counts") or {}).items()
         if v is not None}  # e.g. no tokens/s when every request was reused
    if c:
        out.append(("generation", f"{c.get('generated', 0):,} generated, {c.get('reused', 0):,} "
                                  f"reused ({c.get('reuse_share', 0):.1%}), "
                                  f"{c.get('tokens_per_s', 0):,} tokens/s"))
    for s in ("generate", "kill_badcases"):
        if stages.get(s):
            out.append((f"{s} rows", ", ".join(f"{k} {v:,}" for k, v in
                                               stages[s]["rows"].items() if v is not None)))
    p = data.get("personalization")
    if p:
        out.append(("personalization (passing variants)", _personalization_line(p)))
    g = data.get("publish_gate")
    if g:
        n = g["numbers"] or {}
        out.append(("publish gate", (
            f"passes: {n.get('passing', 0):,} variants, {n.get('passing_share', 0):.1%} of "
            f"requests, {n.get('ads_covered_share', 0):.1%} of matched ads covered")
            if g["passes"] else "REFUSES this cycle: " + "; ".join(g["failures"])))
    missing = [s for s, v in stages.items() if v is None]
    out.append(("stages not run", ", ".join(missing) or "none"))
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _personalization_line(p: dict[str, Any]) -> str:
    d, f, c, q = p["distinct"], p["fidelity"], p["fidelity_control"], p["query_uptake"]
    return (f"{_pct(d['share_3plus_distinct'])} of {d['ads']:,} ads with ≥ 3 query-free "
            f"variants have ≥ 3 distinct titles ({_pct(d['one_title_for_all'])} one title for "
            f"all); cross-cluster fidelity {_pct(f['fidelity'])} over {f['pairs']:,} pairs "
            f"(control, clusters' interests swapped: {_pct(c['fidelity'])}; chance 50%); "
            f"query uptake {_pct(q['uptake'])} of {q['pairs']:,} "
            f"({_pct(q.get('uptake_open'))} of the {q.get('open_pairs', 0):,} whose query "
            "names a supported word the original title lacks)"
            + (f"; the cluster's point plan is in {_pct(k['share'])} of the {k['variants']:,} "
               "query-free titles that have one" if (k := p.get("plan_kept")) and k["variants"]
               else ""))


def _personalization_html(p: dict[str, Any] | None) -> str:
    if not p:
        return "<p class=muted>(needs kill_badcases, cluster_users and extract_features)</p>"
    e = html.escape
    parts = [f"<p>{e(_personalization_line(p))}</p>",
             "<p class=muted>Fidelity: for each ad and pair of its clusters, does each "
             "cluster's title sit closer (TF-IDF over item texts, a model the generator does "
             "not use) to what that cluster's users clicked than the other's title does? "
             "Identical titles count half; one title for every cluster scores 50%.</p>"]
    for ad in p["at_a_glance"]:
        parts.append(f"<h3>{e(ad['ad_id'])}: {e(ad['original_title'])}</h3>")
        parts.append(_table([[c["cluster_id"], c["interests"], c.get("plan", ""), c["title"]]
                             for c in ad["clusters"]],
                            ["cluster", "what its users clicked (top terms)",
                             "its point plan", "title"]))
    return "\n".join(parts)


def _generation_html(gen: dict | None) -> str:
    if not gen:
        return "<p class=muted>(generate has not run)</p>"
    c = {k: v for k, v in (gen.get("counts") or {}).items() if v is not None}
    head = (f"<p>backend <b>{html.escape(str(gen.get('backend')))}</b>, Creative LLM "
            f"{html.escape(str(gen.get('model_version')))}: {c.get('requests', 0):,} requests, "
            f"{c.get('generated', 0):,} generated, {c.get('reused', 0):,} reused from earlier "
            f"cycles (reuse share {c.get('reuse_share', 0):.1%}), {c.get('failed', 0):,} failed, "
            f"{c.get('tokens_per_s', 0):,} tokens/s</p>")
    shards = gen.get("per_shard") or []
    rows = [[i, s.get("engine"), s.get("requests"), s.get("generated"), s.get("reused"),
             s.get("output_tokens"), s.get("tokens_per_s"), s.get("seconds")]
            for i, s in enumerate(shards)]
    return head + _table(rows, ["shard", "engine", "requests", "generated", "reused",
                                "tokens", "tokens/s", "seconds"])


def render_html(data: dict[str, Any], pngs: dict[str, bytes]) -> str:
    e = html.escape

    def img(name: str) -> str:
        if name not in pngs:
            return "<p class=muted>(no data)</p>"
        b64 = base64.b64encode(pngs[name]).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{b64}">'

    stage_rows = [[s, "not run" if v is None else f"{v['duration_s']:.1f} s",
                   "" if v is None else ", ".join(f"{k}: {n:,}" for k, n in v["rows"].items()
                                                  if n is not None)]
                  for s, v in data["stages"].items()]
    parts = [
        f"<h1>Creative Factory cycle {e(data['cycle_id'])}</h1>",
        _table([[k, v] for k, v in headline(data)], ["", ""]),
        "<h2>Stages</h2>", _table(stage_rows, ["stage", "duration", "rows out"]),
        img("durations"),
        "<h2>Input quality</h2>", img("quarantine"),
        "<h2>User clusters</h2>",
        _table([[k, v] for k, v in data.get("clusters", {}).items()], ["", ""]),
        img("cluster_sizes"),
        "<h2>Ad-cluster matching</h2>", img("requests"), img("coverage"),
        "<h2>Generation</h2>", _generation_html(data.get("generation")),
        "<h2>Badcase Killer</h2>", img("kills"),
        "<h2>Personalization</h2>", _personalization_html(data.get("personalization")),
        "<h2>Sample variants</h2>",
    ]
    if not data["samples"]:
        parts.append("<p class=muted>(no generated variants in this cycle yet)</p>")
    for ad in data["samples"]:
        parts.append(f"<h3>{e(ad['ad_id'])}: {e(ad['original_title'])}</h3>")
        parts.append(_table([[v["cluster_id"], v["strategy"], v["query"] or "", v["title"]]
                             for v in ad["variants"]], ["cluster", "strategy", "query", "title"]))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:left;font-size:14px}.muted{color:#888}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Cycle "
            f"{e(data['cycle_id'])}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def render_markdown(data: dict[str, Any]) -> str:
    lines = [f"# Creative Factory cycle {data['cycle_id']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in headline(data)]
    lines += ["", "| stage | duration (s) | rows out |", "|---|---|---|"]
    for s, v in data["stages"].items():
        rows = "" if v is None else ", ".join(f"{k} {n:,}" for k, n in v["rows"].items()
                                              if n is not None)
        lines.append(f"| {s} | {'not run' if v is None else v['duration_s']} | {rows} |")
    kills = _kill_counts(data)
    if kills:
        lines += ["", "Kills by reason: " + ", ".join(f"{k} {n:,}" for k, n in kills.items())]
    for ad in (data.get("personalization") or {}).get("at_a_glance", []):
        lines += ["", f"**{ad['ad_id']}**: {ad['original_title']}", "",
                  "| cluster | what its users clicked | its point plan | title |",
                  "|---|---|---|---|"]
        lines += [f"| {c['cluster_id']} | {c['interests']} | {c.get('plan', '')} | "
                  f"{c['title']} |" for c in ad["clusters"]]
    return "\n".join(lines) + "\n"


def run(cfg: Config, cycle_id: str, force: bool = False) -> dict[str, Any]:
    ms = _manifests(cfg, cycle_id)
    if ms["extract_features"] is None:
        raise UserError(f"cycle {cycle_id} has no committed stage to report on")
    inputs = {s: m["finished_at"] if m else None for s, m in ms.items()}
    here = Path(__file__).parent  # the report, its instruments and the gate it reports
    inputs["code"] = fingerprint_code(Path(__file__), here / "personalization.py",
                                      here / "publish_library.py")

    def build(out: Path) -> StageOutput:
        data = collect(cfg, cycle_id)
        pngs = _plots(data)
        for name, png in pngs.items():
            (out / f"{name}.png").write_bytes(png)
        (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
        (out / "report.html").write_text(render_html(data, pngs))
        (out / "report.md").write_text(render_markdown(data))
        return StageOutput({"report_html": {"path": "report.html", "rows": None},
                            "report_md": {"path": "report.md", "rows": None}},
                           {"plots": sorted(pngs), "headline": dict(headline(data))})

    # the report reads manifests and small tables; the publish gate's thresholds
    # (`library`) decide its verdict
    manifest = run_stage(cfg, cycle_id, STAGE, inputs=inputs,
                         config_hash=cfg.section_hash("library"),
                         build=build, force=force)
    log.info("report for cycle %s: %s", cycle_id, manifest["outputs"]["report_html"]["path"])
    return manifest
