"""Generation benchmark: batched vLLM against Hugging Face `generate`, same requests, one run.

    python tests/benchmarks/bench_generate.py                      # CURRENT Creative LLM
    python tests/benchmarks/bench_generate.py --model DIR --requests 1024

The requests are the sample's active ads × user embeddings of the latest cycle with
embed_users (the shapes `generate` sees: [proj(U), title, selling points (, query)]).
HF runs at each batch size of --hf-batches and is compared at its best one (a batch-1
baseline would flatter vLLM); vLLM gets every request at once, as the stage does. Both
decode greedily up to the model's `max_new_tokens`. Reported: output tokens/s and
requests/s (vLLM with and without its engine start), the ratio vLLM / best HF, and the
training throughput recorded in the model's `creator.json` (target tokens/s).

Machine and results are printed as Markdown and saved to var/bench/generate.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_features import machine  # noqa: E402


def requests(cfg, n: int, seed: int = 0):
    """n (user embedding, prompt ids) pairs from the latest cycle's ads and users."""
    import pyarrow.parquet as pq

    from jobs.platform.errors import UserError
    from jobs.platform.lake import read_manifest
    from jobs.training.train_creator import load_user_embeddings

    cycles = sorted(p.parent.parent.name for p in
                    (cfg.lake / "cycles").glob("*/embed_users/_SUCCESS"))
    if not cycles:
        raise UserError("no cycle with embed_users in the lake: run `make run` first")
    base = cfg.lake / "cycles" / cycles[-1]
    feats = read_manifest(base / "extract_features")
    users = load_user_embeddings(read_manifest(base / "embed_users")["outputs"][
        "user_embeddings"]["path"])
    ads = pq.read_table(feats["outputs"]["active_ads"]["path"]).to_pylist()
    queries = {r["ad_id"]: r["query"] for r in pq.read_table(
        feats["outputs"]["ad_queries"]["path"]).to_pylist() if r["query_rank"] == 1}
    rng = np.random.default_rng(seed)
    u = np.stack(list(users.values()))
    pick_ads = rng.integers(0, len(ads), n)
    pick_users = rng.integers(0, len(u), n)
    reqs = []
    for i, (a, k) in enumerate(zip(pick_ads, pick_users, strict=True)):
        ad = ads[a]
        reqs.append((u[k], ad["title"], ad["selling_points"],
                     queries.get(ad["ad_id"]) if i % 3 == 0 else None))
    return cycles[-1], reqs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="Creative LLM artifact")
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--hf-batches", default="16,64")
    args = parser.parse_args()

    from jobs.platform.config import load_config
    from jobs.platform.registry import CREATOR, require_artifact
    from jobs.stages.generate import HFEngine, VLLMEngine, request_seed
    from models.creative_llm import CreativeLLM

    cfg = load_config()
    artifact = args.model or require_artifact(cfg, CREATOR)
    cycle, reqs = requests(cfg, args.requests)
    light = CreativeLLM.load(artifact, with_lm=False)
    users = np.stack([r[0] for r in reqs]).astype(np.float32)
    prompts = [light.prompt_ids(t, p, q)[0] for _, t, p, q in reqs]
    sources = [(t, p, q) for _, t, p, q in reqs]  # grounded decoding, as the stage does
    seeds = [request_seed(7, str(i)) for i in range(len(reqs))]
    rows = []

    for b in [int(x) for x in args.hf_batches.split(",")]:
        hf = HFEngine(cfg, artifact, batch_size=b)
        t0 = time.time()
        out = hf.generate(users, prompts, seeds, sources=sources)
        secs = time.time() - t0
        tokens = sum(n for _, n, _ in out)
        rows.append({"engine": "hf", "batch": b, "seconds": round(secs, 2), "tokens": tokens,
                     "tokens_per_s": round(tokens / secs, 1),
                     "requests_per_s": round(len(reqs) / secs, 1)})
        hf_titles = [t for t, _, _ in out]
        print(rows[-1], flush=True)
    best = max((r for r in rows if r["engine"] == "hf"), key=lambda r: r["tokens_per_s"])

    t0 = time.time()
    engine = VLLMEngine(cfg, artifact)
    start = time.time() - t0
    try:
        t0 = time.time()
        out = engine.generate(users, prompts, seeds, sources=sources)
        secs = time.time() - t0
    finally:
        engine.close()
    tokens = sum(n for _, n, _ in out)
    same = sum(a == t for (a, _, _), t in zip(out, hf_titles, strict=True)) / len(reqs)
    rows.append({"engine": "vllm", "batch": "all", "seconds": round(secs, 2), "tokens": tokens,
                 "tokens_per_s": round(tokens / secs, 1),
                 "requests_per_s": round(len(reqs) / secs, 2),
                 "engine_start_s": round(start, 1),
                 "tokens_per_s_with_start": round(tokens / (secs + start), 1)})
    result = {"machine": machine(), "cycle": cycle, "model": str(artifact),
              "parameters": sum(p.numel() for p in CreativeLLM.load(artifact).parameters()),
              "requests": len(reqs), "max_new_tokens": light.config.max_new_tokens,
              "rows": rows, "best_hf_batch": best["batch"],
              "vllm_over_best_hf": round(rows[-1]["tokens_per_s"] / best["tokens_per_s"], 2),
              "vllm_with_start_over_best_hf": round(
                  rows[-1]["tokens_per_s_with_start"] / best["tokens_per_s"], 2),
              "same_title_as_hf_share": round(same, 3)}
    out_dir = ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generate.json").write_text(json.dumps(result, indent=2))
    print(f"\n{machine()}; {len(reqs)} requests, model {result['parameters']:,} parameters, "
          f"up to {result['max_new_tokens']} new tokens, greedy\n")
    print("| engine | batch | seconds | output tokens | tokens/s | requests/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['seconds']} | {r['tokens']:,} | "
              f"{r['tokens_per_s']:,} | {r['requests_per_s']} |")
    print(f"\nvLLM / best HF (batch {best['batch']}): {result['vllm_over_best_hf']}× "
          f"({result['vllm_with_start_over_best_hf']}× counting vLLM's {start:.0f} s start); "
          f"same title as HF: {same:.0%}")
    meta = json.loads((Path(artifact) / "creator.json").read_text())
    if meta.get("generation_tokens_per_s"):
        print(f"fine-tuning this model ({meta.get('trainable_layers')} trainable layers, "
              f"{meta.get('examples')} examples, {meta.get('device')}): "
              f"{meta['generation_tokens_per_s']} target tokens/s, {meta.get('seconds')} s")


if __name__ == "__main__":  # vLLM spawns its engine core: the guard is required
    main()
