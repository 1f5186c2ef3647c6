"""The real-product evaluation input: ../shared/data/amazon-industrial with only its N
most-clicked ads active (every other ad stays in the ad library, inactive, so user
histories keep all their clicks), written in the raw contract under OUT.

    python tests/benchmarks/amazon_subset.py --ads 300 --out var/amazon-input
    creative-factory run-cycle --config config/overlays/amazon-industrial.yaml \
        --set inputs.ads=var/amazon-input/ads --set inputs.clicks=var/amazon-input/clicks ...

A cycle over all 3,686 ads asks for ~18,000 titles (about 45 min of generation on 2 CPU
cores); 300 ads ask for 1,500 and keep the evaluation within a session.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "amazon-industrial"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ads", type=int, default=300, help="most-clicked ads kept active")
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=Path("var/amazon-input"))
    args = ap.parse_args()
    clicks = args.source / "clicks" / "clicks.jsonl"
    counts = Counter(json.loads(line)["ad_id"] for line in clicks.open(encoding="utf-8")
                     if line.strip())
    keep = {a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: args.ads]}
    (args.out / "ads").mkdir(parents=True, exist_ok=True)
    (args.out / "clicks").mkdir(parents=True, exist_ok=True)
    n_ads = n_active = 0
    with (args.out / "ads" / "ads.jsonl").open("w", encoding="utf-8") as out:
        for line in (args.source / "ads" / "ads.jsonl").open(encoding="utf-8"):
            if not line.strip():
                continue
            try:
                ad = json.loads(line)
            except json.JSONDecodeError:  # the feature stage quarantines it: keep it as is
                out.write(line)
                continue
            ad["active"] = ad.get("ad_id") in keep
            n_ads += 1
            n_active += ad["active"]
            out.write(json.dumps(ad) + "\n")
    shutil.copyfile(clicks, args.out / "clicks" / "clicks.jsonl")
    print(f"{args.out}: {n_ads} ads ({n_active} active), clicks copied from {clicks}")


if __name__ == "__main__":
    main()
