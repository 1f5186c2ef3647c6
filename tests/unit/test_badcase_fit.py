"""Badcase Killer rules that read the ad's own text before calling a title broken, and the
activity-fit rule of guideline v2 (no Spark).

* What the advertiser wrote is not the generation's defect: a doubled word, a repeated
  bigram, a thrice-used word or an ending that one of the ad's texts has itself; a size
  copied whole with its unit; a range never spans a clause break; "rotates" for "rotation".
* The product noun skips trailing descriptors ("Sealing Tape Transparent Heavy Duty") and a
  leading "For ..." right after the brand.
* `misfit_audience` (fabrication): an activity framing of config/lexicons/activities.yaml,
  word for word ("For the home office: ..."), must fit the ad (a cue or the framing's words
  in its title, selling points, brand, query or category); interest framings pass.

Each case that passes here was killed by the rules before this change (or, for the new
kills, passed before)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.platform.config import load_config
from jobs.stages.badcase_rules import AdSource, judge_title, load_lexicons, stem

VISE = AdSource('SE 8436MVC 3" Universal Table Vise',
                ['SE is very proud to bring you this 3" Universal Table Vise, featuring a '
                 'rotation of 360 degrees and a tilt of 45 degrees'], None, "SE")
SUNSCREEN = AdSource("Lumelle For Sensitive Skin Mineral Sunscreen SPF 50, Travel Size - "
                     "Suitable for all skin types",
                     ["Suitable for all skin types", "Buy 2, get 1 free", "1.7 oz bottle",
                      "Rated 4.7 out of 5 by customers"], None, "Lumelle")
COFFEE = AdSource("Harvest Row Organic Organic Coffee Beans",
                  ["No artificial flavors", "Cold-pressed", "Pack of 12"], None, "Harvest Row")
FILAMENT = AdSource("HATCHBOX PLA 3D Printer Filament, 1 kg Spool, 1.75 mm, Gray",
                    ["The filaments are universally designed and compatible with 3D Printers "
                     "using 1.75mm diameter filament"], None, "HATCHBOX")
WD40 = AdSource("WD-40 Multi-Use Product with SMART STRAW",
                ["Simply flip it up for a precision stream and down for a regular spray "
                 "action"], None, "WD-40")
TOOTHBRUSH = AdSource("Philips Sonicare HealthyWhite+ electric rechargeable toothbrush, HX8911",
                      ["Place the handle in the charger and charge for 24 hours before "
                       "turning it back on"], None, "Philips")
GLUE = AdSource("Loctite Ultra Gel Control Super Glue 4-Gram (1363589)",
                ["For over 50 years, Loctite has provided customers with advanced adhesive "
                 "and sealing solutions"], None, "Loctite")
TAPE = AdSource("Sparco Sealing Tape Transparent Heavy Duty, 48mm x 50m, 6 Rolls (60041)",
                ["Package Sealing Tape, 3Core, 1-7/8x164, 6/PK, Clear"], None, "Sparco")
CREAM = AdSource("Vitalis Night Cream", ["1.7 oz bottle", "Fragrance-free formula"], None,
                 "Vitalis")
POST = AdSource("Pawsome Pantry Cat Scratching Post",
                ["Holds up to 4 days of meals", "30-day free returns"], None, "Pawsome Pantry")
JACKET = AdSource("Northloom Relaxed Fit Rain Jacket", ["Reinforced stitching"],
                  "rain jacket for hiking in the mountains", "Northloom")

SHAMPOO = AdSource("Lumelle Travel Size Argan Oil Shampoo, For Sensitive Skin",
                   ["Recyclable packaging", "Made with hyaluronic acid", "Absorbs in seconds"],
                   None, "Lumelle", "beauty")
MASSAGE = AdSource("Vitalis Portable Massage Gun, Rechargeable",
                   ["Carrying case included", "5 speed settings", "Two-minute smart timer"],
                   None, "Vitalis", "health_wellness")
HUB = AdSource("Voltaro Fast Charging USB-C Hub, Dual Pairing",
               ["Ships within 24 hours", "18-month warranty"], None, "Voltaro", "electronics")
BOOTS = AdSource("Summitcraft Breathable Hiking Boots", ["Rated to 20°F", "Lifetime warranty"],
                 None, "Summitcraft", "sports_outdoors")
LIGHTS = AdSource("Greenthumb Works Solar Lights", ["3-year warranty"], None,
                  "Greenthumb Works", "garden")
SHIRT = AdSource("Ashgrove Unisex Linen Shirt", ["Available in 6 colors"], None, "Ashgrove",
                 "fashion")


@pytest.fixture(scope="module")
def lex():
    return load_lexicons(load_config(environ={}).badcase)


def codes(lex, title, src):
    return {c for c, _ in judge_title(title, src, lex)}


def test_a_noun_in_tion_shares_the_verbs_stem(lex):
    assert stem("rotation") == stem("rotates") == stem("rotate")
    assert stem("protection") == stem("protect")
    assert codes(lex, 'SE 8436MVC 3" Universal Table Vise, rotates 360 degrees', VISE) == set()
    assert "fabricated_word" in codes(lex, 'SE 8436MVC 3" Table Vise, swivels 360 degrees', VISE)


@pytest.mark.parametrize("title,src", [
    # a range does not span a clause break ("50 - 1.7 oz" is no 50-to-1.7 oz)
    ("Lumelle For Sensitive Skin Mineral Sunscreen SPF 50 - 1.7 oz bottle", SUNSCREEN),
    # the original doubles "Organic" itself
    ("Harvest Row Organic Organic Coffee Beans, No artificial flavors", COFFEE),
    # "filament" three times: the original's once, the selling point's own two
    ("HATCHBOX PLA 3D Printer Filament, The filaments are universally designed and "
     "compatible with 3D Printers using 1.75mm diameter filament", FILAMENT),
    # "for a" twice inside the ad's own selling point
    ("WD-40 Multi-Use Product - Simply flip it up for a precision stream and down for a "
     "regular spray action", WD40),
    # ends on "on" where the ad's own point ends
    ("Philips Sonicare HealthyWhite+ electric rechargeable toothbrush - Place the handle in "
     "the charger and charge for 24 hours before turning it back on", TOOTHBRUSH),
    # a duration, not an age
    ("Loctite Ultra Gel Control Super Glue, For over 50 years", GLUE),
    # the product noun is "tape", not the trailing "Heavy Duty"
    ("Sparco Sealing Tape, 3Core, 1-7/8x164, 6/PK, Clear", TAPE),
    # a size copied whole with its unit: neither clipped nor moved
    ("Lumelle Mineral Sunscreen SPF 50, 1.7 oz, Rated 4.7 out of 5 by customers", SUNSCREEN),
    ("Vitalis Night Cream, 1.7 oz fragrance-free formula", CREAM),
    # the query is the user's words, not a claim of the ad: no piece of it is a clipped point
    ("Northloom Relaxed Fit Rain Jacket, for hiking", JACKET),
    ("Northloom Relaxed Fit Rain Jacket, in the mountains", JACKET),
])
def test_what_the_ad_itself_writes_passes(lex, title, src):
    assert codes(lex, title, src) == set()


@pytest.mark.parametrize("title,src,code", [
    ("Harvest Row Organic Coffee Beans, Cold-pressed, Cold-pressed", COFFEE, "repeated_ngram"),
    # a clause said twice is a loop (before: passed, "pack" only twice)
    ("Harvest Row Organic Coffee Beans, Pack of 12, Pack of 12", COFFEE, "repeated_ngram"),
    ("Harvest Row Organic Coffee Coffee Beans", COFFEE, "repeated_words"),
    ("HATCHBOX PLA Filament filament filament, 1.75 mm", FILAMENT, "repeated_words"),
    ("WD-40 Multi-Use Product for a precision stream and for a precision stream", WD40,
     "repeated_ngram"),
    ("Philips Sonicare HealthyWhite+ electric rechargeable toothbrush, charge for 24 hours "
     "and turn it on", TOOTHBRUSH, "cut_off_ending"),
    ("Loctite Ultra Gel Control Super Glue for those over 50 years old", GLUE,
     "protected_attribute"),
    # the brand and adjectives only (before: "Heavy Duty" counted as the product noun)
    ("Sparco Transparent Heavy Duty, 6 Rolls", TAPE, "fragment"),
    # the brand only: "For" after the brand no longer ends the product's name at "Lumelle"
    ("Lumelle, For Sensitive Skin, Rated 4.7 out of 5 by customers", SUNSCREEN, "fragment"),
    # a duration or count without what it measures is still clipped
    ("Pawsome Pantry Cat Scratching Post, Holds up to 4 days", POST, "clipped_point"),
    ("Pawsome Pantry Cat Scratching Post, 30-day", POST, "clipped_point"),
    ("Pawsome Pantry Cat Scratching Post, 30-day free shipping", POST, "moved_number"),
])
def test_the_generations_own_defects_still_die(lex, title, src, code):
    assert code in codes(lex, title, src)


@pytest.mark.parametrize("title,src", [
    ("For the home office: Lumelle Travel Size Argan Oil Shampoo", SHAMPOO),
    ("Lumelle Travel Size Argan Oil Shampoo, For The Home office", SHAMPOO),
    ("Essential for the home office: Vitalis Portable Massage Gun, Rechargeable", MASSAGE),
    ("Summitcraft Breathable Hiking Boots for game night", BOOTS),
    ("Ashgrove Unisex Linen Shirt, available in 6 colors, for pet owners", SHIRT),
])
def test_an_activity_framing_the_ad_does_not_fit_dies(lex, title, src):
    found = judge_title(title, src, lex)
    assert {c for c, _ in found} == {"misfit_audience"}, found


@pytest.mark.parametrize("title,src", [
    ("For hiking and camping: Summitcraft Breathable Hiking Boots", BOOTS),  # "hiking"
    ("For the home office: Voltaro Fast Charging USB-C Hub", HUB),  # a cue: usb-c hub
    ("For workouts and yoga: Vitalis Portable Massage Gun, 5 speed settings", MASSAGE),
    ("For self-care: Lumelle Travel Size Argan Oil Shampoo", SHAMPOO),  # a cue: shampoo
    ("For travel: Lumelle Travel Size Argan Oil Shampoo", SHAMPOO),  # the ad's own "Travel"
    ("For the garden: Greenthumb Works Solar Lights", LIGHTS),  # the category: garden
    # interest framings name no activity of the lexicon (interest_words.yaml)
    ("For busy mornings: Voltaro Fast Charging USB-C Hub", HUB),
    ("Lumelle Travel Size Argan Oil Shampoo, made for home cooks", SHAMPOO),
    ("Dog lovers: Ashgrove Unisex Linen Shirt, available in 6 colors", SHIRT),
    ("Vitalis Portable Massage Gun, Rechargeable, for weekend warriors", MASSAGE),
    ("Gift givers: Lumelle Travel Size Argan Oil Shampoo", SHAMPOO),
])
def test_a_framing_that_fits_or_names_no_activity_passes(lex, title, src):
    assert codes(lex, title, src) == set()


def test_the_category_is_what_fits_when_no_text_says_it(lex):
    title = "For the garden: Greenthumb Works Solar Lights"
    no_category = AdSource(LIGHTS.original_title, LIGHTS.selling_points, None, LIGHTS.brand)
    assert codes(lex, title, no_category) == {"misfit_audience"}
    assert codes(lex, title, LIGHTS) == set()


def test_the_stage_reads_the_category_from_the_active_ads():
    from jobs.stages.kill_badcases import judge_rows

    cfg = load_config(environ={})
    title = "For the garden: Greenthumb Works Solar Lights"
    rows = pa.table({
        "request_id": ["r1"], "ad_id": ["ad-1"], "advertiser_id": ["adv-1"],
        "cluster_id": pa.array([0], pa.int32()), "cluster_rank": pa.array([1], pa.int16()),
        "strategy": ["query_free"], "query": pa.array([None], pa.string()), "title": [title],
        "original_title": [LIGHTS.original_title],
        "selling_points": pa.array([LIGHTS.selling_points], pa.list_(pa.string())),
        "brand": [LIGHTS.brand], "score": pa.array([1.0], pa.float32())})

    def active(category):
        return pa.table({"ad_id": ["ad-1"], "advertiser_id": ["adv-1"], "brand": [LIGHTS.brand],
                         "title": [LIGHTS.original_title],
                         "category": pa.array([category], pa.string())})

    reasons, _ = judge_rows(rows, cfg, active("garden"), progress=False, workers=1)
    assert reasons == [[]]
    reasons, _ = judge_rows(rows, cfg, active("fashion"), progress=False, workers=1)
    assert reasons == [["misfit_audience"]]
