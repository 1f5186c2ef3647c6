"""Benchmarks for the foundation: sample generation and feature extraction at scale.

    make bench                      # 1M users / 100k ads / ~10M click events
    python tests/benchmarks/bench_features.py --users 100000 --events-per-user 10

Each measured command runs as its own process; peak memory is the largest resident set
of that process and all its children (the Spark JVM included), polled every 0.2 s.
Results are printed as a Markdown table and saved to var/bench/features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("creative-factory"))


def machine() -> str:
    """The machine a benchmark ran on, for the results table."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")


def measure(cmd: list[str]) -> dict:
    """Wall time and peak RSS (process tree) of one command."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = 0
    done = threading.Event()

    def poll():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [p, *p.children(recursive=True)]
                peak = max(peak, sum(x.memory_info().rss for x in tree if x.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    out, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        sys.stderr.write(out[-4000:])
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    return {"seconds": round(time.time() - started, 1), "peak_rss_gb": round(peak / 2**30, 2),
            "output_tail": out.strip().splitlines()[-8:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--ads", type=int, default=100_000)
    ap.add_argument("--events-per-user", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--big-sample-events-per-user", type=float, default=50.0,
                    help="also time sample-data alone at this many events per user "
                         "(1M users x 50 = the 50M-event streaming check); 0 to skip")
    args = ap.parse_args()

    sample = args.out / f"sample-{args.users}u-{args.ads}a-{args.events_per_user:g}e"
    results: dict = {
        "machine": machine(),
        "python": platform.python_version(),
    }
    print(f"sample data -> {sample}", flush=True)
    results["sample_data"] = measure([
        CLI, "sample-data", "--out", str(sample), "--users", str(args.users),
        "--ads", str(args.ads), "--events-per-user", str(args.events_per_user), "--force"])
    manifest = json.loads((sample / "_SAMPLE.json").read_text())
    results["events"] = manifest["events"]
    print(f"  {manifest['events']:,} events: {results['sample_data']}", flush=True)

    print("extract_features ...", flush=True)
    results["extract_features"] = measure([
        CLI, "extract-features", "--cycle-id", "20261101T000000Z", "--force",
        "--set", f"inputs.ads={sample / 'ads'}", "--set", f"inputs.clicks={sample / 'clicks'}",
        "--set", f"lake={args.out / 'lake'}", "--set", f"spark.driver_memory={args.driver_memory}",
        "--set", "spark.shuffle_partitions=16"])
    print(f"  {results['extract_features']}", flush=True)

    if args.big_sample_events_per_user:
        big = args.out / "sample-big"
        print(f"sample data, {args.big_sample_events_per_user:g} events per user -> {big}",
              flush=True)
        results["sample_data_big"] = measure([
            CLI, "sample-data", "--out", str(big), "--users", str(args.users),
            "--ads", str(args.ads), "--events-per-user", str(args.big_sample_events_per_user),
            "--force"])
        results["events_big"] = json.loads((big / "_SAMPLE.json").read_text())["events"]
        print(f"  {results['events_big']:,} events: {results['sample_data_big']}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features.json").write_text(json.dumps(results, indent=2))
    s, e = results["sample_data"], results["extract_features"]
    print(f"\nMachine: {results['machine']}\n")
    print("| step | scale | wall time | peak RSS |")
    print("|---|---|---|---|")
    scale = f"{args.users:,} users / {args.ads:,} ads / {results['events']:,} events"
    print(f"| sample-data | {scale} | {s['seconds']:.0f} s | {s['peak_rss_gb']:.2f} GB |")
    print(f"| extract_features | {scale} | {e['seconds']:.0f} s | {e['peak_rss_gb']:.2f} GB |")
    if "sample_data_big" in results:
        b = results["sample_data_big"]
        big_scale = f"{args.users:,} users / {args.ads:,} ads / {results['events_big']:,} events"
        print(f"| sample-data | {big_scale} | {b['seconds']:.0f} s | {b['peak_rss_gb']:.2f} GB |")
    timings = json.loads((args.out / "lake" / "cycles" / "20261101T000000Z" / "extract_features"
                          / "_SUCCESS").read_text()).get("timings_s", {})
    print("\nextract_features steps (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
