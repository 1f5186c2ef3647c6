"""HLLM benchmarks: the hierarchical path against flattening, and embed_users throughput.

    python tests/benchmarks/bench_hllm.py                 # defaults below
    python tests/benchmarks/bench_hllm.py --users 1000000 # the 1M-user memory check

1. Hierarchical vs flattened, side by side in one run, same users and history length:
   * hierarchical: every unique item text through the Item LLM once, then the User LLM
     over each user's sequence of item embeddings;
   * flattened: each user's history titles joined into one text and run through the
     Item LLM per user (truncated at the model's 512 positions).
2. embed_users from cached item embeddings: users per second and peak RSS of the
   `creative-factory embed-users` process (one shard holding every user), on synthetic
   histories over synthetic item embeddings with the default User LLM architecture
   (random weights: speed does not depend on the values).

Machine and results are printed as Markdown and saved to var/bench/hllm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_features import machine, measure  # noqa: E402

CLI = str(Path(sys.executable).with_name("creative-factory"))
CYCLE = "20261101T000000Z"


def hierarchical_vs_flat(users: int, history: int, items: int) -> dict:
    import torch

    from jobs.platform.config import load_config
    from jobs.sample.sample_data import SampleSpec, make_catalog
    from jobs.training.train_hllm import build_models
    from models.item_llm import ItemLLM, ItemLLMConfig
    from models.user_llm import left_pad

    torch.manual_seed(0)
    catalog = make_catalog(SampleSpec(users=1, ads=items, seed=1)).table
    texts = [f"{t} | {b} | {c}" for t, b, c in zip(catalog.column("title").to_pylist(),
                                                   catalog.column("brand").to_pylist(),
                                                   catalog.column("category").to_pylist(),
                                                   strict=True)]
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, items, size=(users, history))
    cfg = load_config()
    item_llm = ItemLLM(ItemLLMConfig()).eval()
    user_llm, _ = build_models(cfg, item_llm.dim)
    user_llm.eval()

    with torch.inference_mode():
        start = time.perf_counter()
        emb = torch.cat([item_llm.embed(texts[i:i + 128])[0] for i in range(0, items, 128)])
        for b in range(0, users, 256):
            x, mask = left_pad([emb[torch.as_tensor(s)] for s in seqs[b:b + 256]], history)
            user_llm(x, mask)
        hierarchical = time.perf_counter() - start

        flat_llm = ItemLLM(ItemLLMConfig(max_tokens=512)).eval()
        start = time.perf_counter()
        for b in range(0, users, 8):
            flat_llm.embed([" ; ".join(texts[i] for i in s) for s in seqs[b:b + 8]])
        flattened = time.perf_counter() - start
    return {"users": users, "history": history, "unique_items": items,
            "hierarchical_s": round(hierarchical, 2), "flattened_s": round(flattened, 2),
            "speedup": round(flattened / hierarchical, 1)}


def synthetic_cycle(out: Path, users: int, history: int, items: int) -> Path:
    """A lake with user_sequences, item embeddings and a default-architecture HLLM."""
    import torch

    from jobs.platform.config import load_config
    from jobs.training.train_hllm import build_models

    lake = out / "lake"
    cycle = lake / "cycles" / CYCLE
    seq_dir = cycle / "extract_features" / "user_sequences"
    seq_dir.mkdir(parents=True, exist_ok=True)
    hashes = [f"{i:016x}" for i in range(items)]
    rng = np.random.default_rng(0)
    chunk = 100_000
    for k, first in enumerate(range(0, users, chunk)):
        n = min(chunk, users - first)
        idx = rng.integers(0, items, size=(n, history))
        flat = pa.array(np.asarray(hashes, dtype=object)[idx.reshape(-1)], pa.string())
        if isinstance(flat, pa.ChunkedArray):
            flat = flat.combine_chunks()
        pq.write_table(pa.table({
            "user_id": pa.array([f"u{first + i:08d}" for i in range(n)]),
            "item_hashes": pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * history + 1, history, dtype=np.int32)), flat),
        }), seq_dir / f"part-{k:05d}.parquet")
    emb_dir = cycle / "embed_items"
    emb_dir.mkdir(parents=True, exist_ok=True)
    vecs = rng.standard_normal((items, 384)).astype(np.float32)
    pq.write_table(pa.table({
        "item_hash": pa.array(hashes),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 384)}),
        emb_dir / "item_embeddings.parquet")
    for stage, outputs in (
            ("extract_features", {"user_sequences": {"path": str(seq_dir), "rows": users}}),
            ("embed_items", {"item_embeddings": {"path": str(emb_dir / "item_embeddings.parquet"),
                                                 "rows": items}})):
        (cycle / stage / "_SUCCESS").write_text(json.dumps(
            {"path": str(cycle / stage), "outputs": outputs, "finished_at": "bench"}))
    models = out / "models"
    cfg = load_config()
    torch.manual_seed(0)
    user_llm, _ = build_models(cfg, 384)
    user_llm.save(models / "bench" / "user_llm")
    (models / "bench" / "hllm.json").write_text(json.dumps({"version": "hllm-bench"}))
    (models / "CURRENT").write_text("bench\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flat-users", type=int, default=1000)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--users", type=int, default=100_000, help="users for embed_users")
    ap.add_argument("--catalog", type=int, default=100_000, help="items for embed_users")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    args = ap.parse_args()
    results: dict = {"machine": machine()}

    print("hierarchical vs flattened ...", flush=True)
    results["hierarchical_vs_flat"] = hierarchical_vs_flat(args.flat_users, args.history,
                                                           args.items)
    print(f"  {results['hierarchical_vs_flat']}", flush=True)

    work = synthetic_cycle(args.out / "hllm-embed-users", args.users, args.history, args.catalog)
    print(f"embed_users on {args.users:,} users ...", flush=True)
    run = measure([CLI, "embed-users", "--cycle-id", CYCLE, "--shard", "0", "--force",
                   "--set", f"lake={work / 'lake'}", "--set", f"hllm.model_dir={work / 'models'}",
                   "--set", "hllm.embed.user_shards=1"])
    run["users_per_s"] = round(args.users / run["seconds"])
    results["embed_users"] = {"users": args.users, "history": args.history, **run}
    print(f"  {results['embed_users']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hllm.json").write_text(json.dumps(results, indent=2))
    h, e = results["hierarchical_vs_flat"], results["embed_users"]
    print(f"\nMachine: {results['machine']}\n")
    print("| benchmark | setting | result |\n|---|---|---|")
    print(f"| hierarchical vs flattened | {h['users']} users x {h['history']} items, "
          f"{h['unique_items']} unique items | {h['hierarchical_s']} s vs {h['flattened_s']} s "
          f"= **{h['speedup']}x** less time |")
    print(f"| embed_users (1 process, wall incl. start-up) | {e['users']:,} users x {e['history']} "
          f"items | {e['users_per_s']:,} users/s, peak RSS {e['peak_rss_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
