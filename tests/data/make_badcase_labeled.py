"""Writes tests/data/badcase_labeled.jsonl: clean and planted-bad titles for the Badcase Killer.

    python tests/data/make_badcase_labeled.py

Ads come from the sample catalog generator (seed 21), so titles, selling points, brands and
queries look like the factory's. Each labeled row is one title judged against its ad:

* clean: the ad's own words rearranged, with audience/marketing phrases, selling points
  (numbers included) and the user's query;
* planted, one family per row (`label`), with `also` naming the other families that rightly
  fire on the same text (a planted city is also an ungrounded word): fabrication (content
  the ad does not have), numbers (changed or invented numbers, prices, quantities,
  percentages over 100), locations, brands (another advertiser's), sensitive (absolute,
  medical, financial claims, profanity, protected attributes), format (empty, too short,
  too long, repeated words, same as the original), degenerate (a loop inside a clause, a
  cut-off ending, a fragment that names no product).

Labels come from how a row was built, never from running the rules. Deterministic.

Guideline v1 (docs/badcase-labeling-guideline.md) relabels some rows this generator first
wrote as clean (`relabel_v1`, applied to every row written; for the committed set, whose
catalog the sample generator no longer reproduces, run `--relabel-v1` to relabel the file
in place without regenerating it):

* a query-aware row that echoes a query's protected group ("... for men", "for women") is
  `sensitive`, a ranking ("best", "top rated") `sensitive`, a price or deal word ("cheap",
  "deal", "sale") `fabrication`: the query does not license claims or a guess of who the
  user is;
* "New:" and "Your new everyday ..." claim a novelty the ad does not state: `fabrication`;
* "for new parents", "for families" frame the user by family status: `sensitive` (the
  words are no interest of the audience lexicon either: `fabrication` may fire too).

A relabeled row keeps its title and ad; its `note` says why.

Guideline v2 adds: an activity framing (config/lexicons/activities.yaml) must fit the
product. This generator appends audiences at random, and 9 clean rows of the committed set
frame an activity their ad does not fit ("Roadmate Magnetic Tire Inflator for pet owners");
each was read against its ad and is listed in `V2_MISFITS` by id (`--relabel-v2` relabels
the committed file in place; the ids name the committed rows, not a regenerated set). It
also completes the labels of the "too long" rows: their title repeats every selling point
(the list, then reversed), a loop, so `degenerate` may rightly fire too (`also`; guideline
v1 already calls a repeated selling point a loop).
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jobs.sample.sample_data import SampleSpec, make_catalog  # noqa: E402

OUT = Path(__file__).with_name("badcase_labeled.jsonl")
AUDIENCES = ["for runners", "for hikers", "for home cooks", "for travelers", "for gamers",
             "for pet owners", "for commuters", "for new parents", "for gift givers",
             "for music lovers", "for book lovers", "for coffee lovers", "for gardeners",
             "for weekend warriors", "for remote workers", "for families", "for students"]
OPENERS = ["Meet the", "Discover the", "Say hello to the", "Upgrade to the", "Introducing the",
           "Treat yourself to the", "Check out the", "Shop now:", "New:", "Explore the"]
FABRICATIONS = ["handmade in small batches", "titanium frame", "with free engraving",
                "made of bamboo", "solar charging", "with lifetime tech support",
                "genuine crocodile leather", "vintage edition", "hypoallergenic formula",
                "with bonus accessories", "self-cleaning", "gold-plated", "luxury edition",
                "voice controlled", "heated seats", "carbon fiber shell", "celebrity approved",
                "as seen on TV", "hand-stitched by artisans", "with wireless charging pad",
                "infused with green tea", "limited collector tin", "smart home ready",
                "military grade", "glow-in-the-dark", "with a free second unit"]
PLACES = ["Paris", "Tokyo", "New York", "London", "Chicago", "Berlin", "Sydney", "Toronto",
          "Madrid", "Seoul", "Mumbai", "Texas", "California", "Japan", "Canada", "Mexico City",
          "Los Angeles", "San Francisco", "Boston", "Seattle", "Denver", "Miami", "Rome",
          "Amsterdam", "Dubai", "Ohio", "Florida", "Italy", "Brazil", "Germany", "Vienna",
          "Lisbon", "Dublin", "Atlanta", "Houston", "Singapore", "Bangkok", "Cairo"]
PLACE_FORMS = ["{core}, loved in {p}", "{core} - now in {p}", "{p}'s favorite {product}",
               "{core}, straight from {p}", "{core} for {p} homes", "The {p} pick: {core}"]
SENSITIVE = [
    ("absolute_claim", "{core}: the best in the world"), ("absolute_claim", "#1 {product} - {core}"),
    ("absolute_claim", "{core}, 100% guaranteed"), ("absolute_claim", "{core} that never fails"),
    ("absolute_claim", "{core} - guaranteed results"), ("absolute_claim", "The cheapest {product} ever"),
    ("medical_claim", "{core} cures insomnia"), ("medical_claim", "{core} for weight loss"),
    ("medical_claim", "{core}: doctor recommended"), ("medical_claim", "{core} heals sore muscles"),
    ("medical_claim", "{core} boosts immunity"), ("medical_claim", "FDA approved {product}"),
    ("financial_promise", "{core} that pays for itself"), ("financial_promise", "Make money fast with the {core}"),
    ("financial_promise", "{core} - earn $500 a week"), ("financial_promise", "{core}: no credit check"),
    ("profanity", "{core} is damn good"), ("profanity", "No crap, just the {core}"),
    ("profanity", "{core}: shit gets done"), ("profanity", "The f**k yes {product}"),
    ("protected_attribute", "{core} for seniors"), ("protected_attribute", "{core} near you"),
    ("protected_attribute", "{core} for women over 50"), ("protected_attribute", "{core} in your 40s"),
    ("protected_attribute", "{core} for teens"), ("protected_attribute", "Locals love the {core}"),
    ("protected_attribute", "{core} in your neighborhood"), ("protected_attribute", "{core} for retirees"),
]
# planted sensitive rows that also carry an ungrounded word or number (by construction)
SENSITIVE_ALSO_NUMBERS = {"{core}, 100% guaranteed", "#1 {product} - {core}", "{core} - earn $500 a week",
                          "{core} for women over 50", "{core} in your 40s"}


V1_QUERY_CLAIMS = [("sensitive", r"\bfor (men|women)\b", "query's protected group echoed"),
                   ("sensitive", r"\b(best|top rated)\b", "query's ranking echoed"),
                   ("fabrication", r"\b(cheap|deal|sale)\b", "query's price/deal word echoed")]
V1_TITLE_CLAIMS = [("fabrication", r"^New: |^Your new everyday ", "\"New\" not in the ad"),
                   ("sensitive", r"\bfor (new parents|families)\b",
                    "family-status framing")]


def relabel_v1(row: dict) -> dict:
    """The row labeled by guideline v1 (see the module docstring); unchanged when v1 agrees
    with how it was built."""
    if row["label"] != "clean":
        return row
    found = []
    q = (row.get("query") or "").lower()
    if q and q in row["title"].lower():  # the query-aware forms echo the whole query
        found += [(fam, why) for fam, rx, why in V1_QUERY_CLAIMS if re.search(rx, q)]
    found += [(fam, why) for fam, rx, why in V1_TITLE_CLAIMS if re.search(rx, row["title"])]
    if not found:
        return row
    fams = sorted({f for f, _ in found}, key=["sensitive", "fabrication"].index)
    also = set(fams[1:])
    if any("family-status" in why for _, why in found):
        also.add("fabrication")  # the words left the audience lexicon
    also.discard(fams[0])
    return {**row, "label": fams[0], "also": sorted(also),
            "note": "guideline v1: " + "; ".join(why for _, why in found)}


# guideline v2: clean rows of the committed set whose activity framing does not fit the ad,
# read one by one (row id -> why)
V2_MISFITS = {
    "r0030": "a tire inflator for pet owners", "r0075": "a water bottle for coffee lovers",
    "r0080": "a frying pan for pet owners", "r0090": "a night cream for book lovers",
    "r0180": "path lights for coffee lovers", "r0198": "a phone mount for pet owners",
    "r0225": "hiking boots for coffee lovers", "r0238": "sneakers for pet owners",
    "r0295": "a stand mixer for pet owners",
}


def relabel_v2(row: dict) -> dict:
    """The committed row labeled by guideline v2 (`V2_MISFITS`); unchanged otherwise."""
    if row.get("note") == "too long" and "degenerate" not in row.get("also", []):
        return {**row, "also": sorted({*row.get("also", []), "degenerate"})}
    why = V2_MISFITS.get(row.get("id", ""))
    if why is None or row["label"] != "clean":
        return row
    return {**row, "label": "fabrication", "also": [],
            "note": f"guideline v2: activity framing the product does not fit ({why})"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def main() -> None:
    rng = random.Random(5)
    catalog = make_catalog(SampleSpec(users=1, ads=400, seed=21))
    ads = catalog.table.to_pylist()
    queries = catalog.queries.to_pylist()
    for i, ad in enumerate(ads):
        ad["queries"] = queries[3 * i : 3 * i + 3]
    from jobs.sample.catalog_vocab import CATEGORIES

    rows: list[dict] = []

    def add(ad, title, label, also=(), query=None, note=""):
        rows.append({"id": f"r{len(rows):04d}", "label": label, "also": sorted(set(also)),
                     "title": title, "original_title": ad["title"],
                     "selling_points": ad["selling_points"], "query": query,
                     "brand": ad["brand"], "advertiser_id": ad["advertiser_id"],
                     "category": ad["category"], "note": note})

    def core(ad):
        return ad["title"].split(",")[0].split(" - ")[0]

    def product(ad):
        c = CATEGORIES[ad["category"]]
        for p in sorted(c["products"], key=len, reverse=True):
            if p in ad["title"]:
                return p
        return core(ad).split()[-1]

    rng.shuffle(ads)
    clean_ads, bad_ads = ads[:300], ads[100:]

    # clean: 300 titles, one per ad, in 10 forms
    for i, ad in enumerate(clean_ads):
        sp = rng.choice(ad["selling_points"])
        q = rng.choice(ad["queries"])
        form = i % 10
        if form == 0:
            add(ad, f"{core(ad)} {rng.choice(AUDIENCES)}", "clean")
        elif form == 1:
            add(ad, f"{rng.choice(OPENERS)} {core(ad)}: {sp}", "clean")
        elif form == 2:
            other = [x for x in ad["selling_points"] if f"{core(ad)} - {x}" != ad["title"]]
            add(ad, f"{core(ad)} - {rng.choice(other)}", "clean")
        elif form == 3:
            add(ad, f"{q.capitalize()}: {core(ad)}", "clean", query=q, note="query-aware")
        elif form == 4:
            add(ad, f"{sp}: the {ad['brand']} {product(ad)}", "clean")
        elif form == 5:
            add(ad, f"{core(ad)}, made {rng.choice(AUDIENCES)}", "clean")
        elif form == 6:
            add(ad, f"{core(ad)} with {sp[0].lower() + sp[1:]}", "clean")
        elif form == 7:
            add(ad, f"Your new everyday {product(ad)}: {core(ad)}", "clean")
        elif form == 8:
            add(ad, f"{core(ad)} {rng.choice(AUDIENCES)} - {sp}", "clean")
        else:
            add(ad, f"{core(ad)}, {q}", "clean", query=q, note="query-aware")

    def pick():
        return rng.choice(bad_ads)

    # fabrication: 60
    n = 0
    while n < 60:
        ad = pick()
        fab = FABRICATIONS[n % len(FABRICATIONS)]
        if words(fab) & words(" ".join([ad["title"], *ad["selling_points"]])):
            continue
        add(ad, rng.choice(["{c}, {f}", "{c} - {f}", "{f}: {c}"]).format(c=core(ad), f=fab)
            .replace(": ", ": ", 1), "fabrication")
        n += 1

    # numbers: 60 in six kinds
    n = 0
    while n < 60:
        ad = pick()
        kind = n % 6
        src = " ".join([ad["title"], *ad["selling_points"]])
        nums = [(sp, m) for sp in ad["selling_points"]
                for m in re.finditer(r"\d+(?:\.\d+)?", sp)]
        if kind == 0 and nums:  # a number of a selling point changed
            sp, m = rng.choice(nums)
            old = m.group(0)
            new = str(int(float(old)) * 2 + 3)
            add(ad, f"{core(ad)} - {sp[:m.start()]}{new}{sp[m.end():]}", "numbers",
                note=f"{old} -> {new}")
        elif kind == 1:
            pct = rng.choice([20, 25, 40, 50, 60, 70])
            if str(pct) in src:
                continue
            add(ad, f"{core(ad)}, {pct}% off today", "numbers")
        elif kind == 2:
            pct = rng.choice([150, 200, 250, 300, 400, 500])
            add(ad, f"{core(ad)}: {pct}% more {product(ad).split()[-1].lower()}", "numbers")
        elif kind == 3:
            price = rng.choice(["$19.99", "$49", "$9.99", "$129", "€39", "£25"])
            if price[1:] in src:
                continue
            add(ad, f"{core(ad)}, now {price}", "numbers")
        elif kind == 4:
            unit_swap = {"hours": "days", "minutes": "hours", "lbs": "oz", "days": "weeks",
                         "pieces": "sets", "players": "teams", "ft": "miles", "servings": "cups",
                         "cubes": "bags", "lights": "lamps", "countries": "cities"}
            cand = [(sp, u) for sp in ad["selling_points"] for u in unit_swap
                    if re.search(rf"\d\s*{u}\b", sp)]
            if not cand:
                continue
            sp, u = rng.choice(cand)
            also = ["fabrication"] if unit_swap[u] not in src.lower() else []
            swapped = re.sub(rf"\b{u}\b", unit_swap[u], sp)
            add(ad, f"{core(ad)} - {swapped}", "numbers", also=also,
                note=f"unit {u} -> {unit_swap[u]}")
        else:
            k = rng.choice([3, 4, 6, 8, 10, 24])
            if str(k) in src:
                continue
            add(ad, f"{core(ad)}, pack of {k}", "numbers",
                also=[] if "pack" in src.lower() else ["fabrication"])
        n += 1

    # locations: 60
    for n in range(60):
        ad = pick()
        p = PLACES[n % len(PLACES)]
        form = PLACE_FORMS[n % len(PLACE_FORMS)]
        also = ["fabrication"]
        add(ad, form.format(core=core(ad), p=p, product=product(ad)), "locations", also=also)

    # brands: 60 (a brand of another advertiser)
    all_brands = sorted({(a["brand"], a["advertiser_id"]) for a in ads})
    n = 0
    while n < 60:
        ad = pick()
        other, adv = rng.choice(all_brands)
        if adv == ad["advertiser_id"] or other == ad["brand"] or \
                words(other) <= words(ad["brand"]) or words(ad["brand"]) <= words(other):
            continue
        prod = product(ad)
        form = n % 4
        if form == 0:
            t = f"{other} {prod}"
        elif form == 1:
            t = f"{core(ad)} by {other}"
        elif form == 2:
            t = f"{core(ad)}, a {other} favorite"
        else:
            t = f"{core(ad)} - as good as {other}"
        also = ["fabrication"] if words(other) - words(ad["title"] + " " +
                                                       " ".join(ad["selling_points"])) else []
        add(ad, t, "brands", also=also)
        n += 1

    # sensitive: 2 per template (56) + 4 more
    for n in range(60):
        ad = pick()
        cat, form = SENSITIVE[n % len(SENSITIVE)]
        also = ["fabrication"]
        if form in SENSITIVE_ALSO_NUMBERS:
            also.append("numbers")
        add(ad, form.format(core=core(ad), product=product(ad)), "sensitive", also=also,
            note=cat)

    # format: 50
    for n in range(50):
        ad = pick()
        kind = n % 5
        if kind == 0:
            add(ad, rng.choice(["", "   "]), "format", note="empty")
        elif kind == 1:
            short = rng.choice(["Buy", "Shop now", "New!", "Wow"])
            add(ad, short, "format",  # too short, and no word of the product left either
                also=["degenerate"] + (["fabrication"] if short in ("Buy", "Wow") else []),
                note="too short")
        elif kind == 2:
            long = f"{core(ad)} - " + ", ".join(ad["selling_points"]) + " - " + \
                ", ".join(reversed(ad["selling_points"]))
            while len(long) <= 160:
                long += f" - {core(ad)}"
            add(ad, long, "format", also=["degenerate"], note="too long")  # a loop too
        elif kind == 3:
            w = core(ad).split()
            i = rng.randrange(len(w))
            add(ad, " ".join(w[: i + 1] + [w[i]] + w[i + 1 :]), "format", note="repeated word")
        else:
            add(ad, rng.choice([ad["title"], ad["title"].lower(), ad["title"].upper() + "!"]),
                "format", note="same as original")

    # degenerate: 60 broken texts a decoder produces (a loop inside a clause, a cut-off
    # ending, a fragment that names no product)
    for n in range(60):
        ad = pick()
        kind = n % 3
        w = core(ad).split()
        sp = rng.choice(ad["selling_points"])
        if kind == 0 and len(w) >= 2:
            add(ad, " ".join(w + w[-2:] + w[-2:]), "degenerate", also=["format"],
                note="loop")  # its words repeat too
        elif kind == 1 or len(w) < 2:
            add(ad, f"{core(ad)}, {sp} {rng.choice(['for the', 'with', 'and', 'of a'])}",
                "degenerate", note="cut-off ending")
        else:
            sp = rng.choice([x for x in ad["selling_points"] if x not in ad["title"]])
            add(ad, f"{rng.choice(['Shop now', 'Order today'])}: {sp}", "degenerate",
                note="fragment: no product")

    rows = [relabel_v1(r) for r in rows]
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    print(f"{OUT}: {len(rows)} rows {counts}")


def relabel_file(path: Path = OUT, relabel=relabel_v1) -> None:
    """Apply `relabel` (`relabel_v1`, `relabel_v2`) to an existing set in place (titles and
    ads unchanged)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    new = [relabel(r) for r in rows]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new),
                    encoding="utf-8")
    print(f"{path}: {sum(a != b for a, b in zip(rows, new, strict=True))} rows relabeled")


if __name__ == "__main__":
    if sys.argv[1:] == ["--relabel-v1"]:
        relabel_file()
    elif sys.argv[1:] == ["--relabel-v2"]:
        relabel_file(relabel=relabel_v2)
    else:
        main()
