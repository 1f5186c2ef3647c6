"""The Badcase Killer's open audience slot (no Spark): a framing about who the product is for
("For busy office workers: ...", "Skincare lovers: ...", "... for weekend joggers") passes
when its words are interests (config/lexicons/interest_words.yaml, the audience lexicon,
the cycle's catalog), dies when it names a protected attribute, and never grounds a claim
about the product."""

from __future__ import annotations

import pytest

from jobs.platform.config import load_config
from jobs.stages.badcase_rules import (
    AdSource,
    BrandLexicon,
    audience_framings,
    catalog_words,
    fabrication_reasons,
    judge_title,
    load_lexicons,
    stemmed,
    tokens,
)

# Ads as the sample catalog writes them (jobs/sample), spelled out so the test does not
# move with the catalog generator.
KETTLE = AdSource("Hearthline Programmable Electric Kettle - 1500-watt heating element",
                  ["1500-watt heating element", "Dishwasher-safe parts", "Boils in 3 minutes",
                   "Auto shut-off for safety"], None, "Hearthline")
CREAM = AdSource("Verdant Glow Lightweight Hydrating Face Moisturizer, Vegan",
                 ["Dermatologist tested", "1.7 oz bottle", "Absorbs in seconds"], None,
                 "Verdant Glow")
SHOES = AdSource("Summitcraft 4-Season Trail Running Shoes, Non-Slip",
                 ["Vibram rubber outsole", "Reflective details for night use",
                  "Rated 4.7 out of 5 by customers"], None, "Summitcraft")
BRANDS = BrandLexicon({"Hearthline": {"adv-1"}, "Verdant Glow": {"adv-2"},
                       "Summitcraft": {"adv-3"}, "Voltaro": {"adv-4"}})
ADV = {"Hearthline": "adv-1", "Verdant Glow": "adv-2", "Summitcraft": "adv-3"}


@pytest.fixture(scope="module")
def lex():
    return load_lexicons(load_config(environ={}).badcase)


def findings(lex, title, src, catalog=None):
    return judge_title(title, src, lex, BRANDS, ADV[src.brand], catalog)


def codes(lex, title, src, catalog=None):
    return {c for c, _ in findings(lex, title, src, catalog)}


@pytest.mark.parametrize("title,src", [
    ("For busy office workers: Hearthline Electric Kettle, boils in 3 minutes", KETTLE),
    ("Skincare lovers: Verdant Glow Hydrating Face Moisturizer, absorbs in seconds", CREAM),
    ("For weekend joggers: Summitcraft Trail Running Shoes, Vibram rubber outsole", SHOES),
    ("Summitcraft Trail Running Shoes for weekend joggers", SHOES),
    ("Hikers' pick: Summitcraft Trail Running Shoes, Non-Slip", SHOES),
    ("For budget shoppers: Hearthline Programmable Electric Kettle", KETTLE),
    ("Hearthline Electric Kettle, auto shut-off for safety, for home cooks", KETTLE),
    ("Home baristas: Hearthline Programmable Electric Kettle", KETTLE),
    ("Runners, meet the Summitcraft Trail Running Shoes - Vibram rubber outsole", SHOES),
    ("For your next road trip: Summitcraft Trail Running Shoes", SHOES),
    ("For the home office: Hearthline Electric Kettle, dishwasher-safe parts", KETTLE),
])
def test_interest_framings_pass(lex, title, src):
    assert findings(lex, title, src) == []


@pytest.mark.parametrize("title,src,term", [
    ("For seniors: Hearthline Electric Kettle, boils in 3 minutes", KETTLE, "for seniors"),
    ("For moms: Verdant Glow Hydrating Face Moisturizer", CREAM, "moms"),
    ("Moms' pick: Verdant Glow Hydrating Face Moisturizer", CREAM, "moms"),
    ("Summitcraft Trail Running Shoes for Christians", SHOES, "for christians"),
    ("For diabetics: Hearthline Programmable Electric Kettle", KETTLE, "for diabetics"),
    ("Hearthline Electric Kettle for men", KETTLE, "men"),
    ("For busy women: Hearthline Electric Kettle", KETTLE, "women"),
    ("For cancer patients: Verdant Glow Face Moisturizer", CREAM, "cancer patients"),
    # named outside any framing form, too
    ("For moms on the go: Verdant Glow Face Moisturizer", CREAM, "moms"),
    ("Verdant Glow Face Moisturizer that retirees love", CREAM, "retirees"),
])
def test_protected_framings_die_as_protected(lex, title, src, term):
    found = findings(lex, title, src)
    assert ("protected_attribute", term) in found, found


def test_a_group_the_ad_names_itself_is_not_a_guess(lex):
    src = AdSource("Cozyfeet Memory Foam Slippers for Women, Non-Slip", [], None, "Cozyfeet")
    assert "protected_attribute" not in {c for c, _ in judge_title(
        "For women: Cozyfeet Memory Foam Slippers", src, lex)}
    assert "protected_attribute" in {c for c, _ in judge_title(
        "For men: Cozyfeet Memory Foam Slippers", src, lex)}


def test_the_query_licenses_a_group_only_when_the_lexicon_says_so(lex, tmp_path):
    cfg = load_config(environ={})
    src = AdSource("Greenthumb Works Cordless Compost Bin", ["Tool-free assembly"],
                   "compost bin for women", "Greenthumb Works")
    title = "Compost Bin for Women, Greenthumb Works, tool-free assembly"
    # the default follows guideline v1: the query alone does not license a group
    assert not lex.protected_query_licenses
    assert ("protected_attribute", "women") in judge_title(title, src, lex)
    lenient = tmp_path / "sensitive_terms.yaml"
    lenient.write_text(cfg.badcase.sensitive_terms.read_text().replace(
        "protected_audiences_licensed_by_query: false",
        "protected_audiences_licensed_by_query: true"))
    cfg.badcase.sensitive_terms = lenient
    assert "protected_attribute" not in {c for c, _ in judge_title(
        title, src, load_lexicons(cfg.badcase))}


@pytest.mark.parametrize("title,src,expected", [
    # the framing is allowed; the claims about the product still need the ad's texts
    ("For busy office workers: Hearthline Electric Kettle, boils in 1 minute", KETTLE,
     "changed_quantity"),
    ("For busy office workers: Hearthline Electric Kettle, now $19.99", KETTLE,
     "changed_price"),
    ("For weekend joggers: Summitcraft Trail Running Shoes, waterproof", SHOES,
     "fabricated_word"),
    ("For weekend joggers: Summitcraft Trail Running Shoes, rated 4.9 out of 5", SHOES,
     "fabricated_number"),
    ("Skincare lovers: Verdant Glow Moisturizer, clinically proven", CREAM, "absolute_claim"),
    ("For London joggers: Summitcraft Trail Running Shoes", SHOES, "location_not_in_source"),
    ("For Voltaro fans: Summitcraft Trail Running Shoes", SHOES, "other_advertiser_brand"),
    # words that are no interest are not grounded by the framing form
    ("For lonely office workers: Hearthline Electric Kettle", KETTLE, "fabricated_word"),
    # a value is an interest of an audience, not a feature of the product
    ("Summitcraft Trail Running Shoes, built for durability", SHOES, "fabricated_word"),
])
def test_claims_inside_a_framed_title_still_die(lex, title, src, expected):
    assert expected in codes(lex, title, src)


def test_framing_with_no_product(lex):
    coffee = AdSource("Harvest Row Organic Coffee Beans, Fair Trade", ["Resealable bag"], None,
                      "Harvest Row")
    brands = BrandLexicon({"Harvest Row": {"adv-9"}})
    # names the product's "coffee", but only as the audience's interest
    assert ("framing_only", "an audience framing with no product") in judge_title(
        "For coffee lovers", coffee, lex, brands, "adv-9")
    assert "framing_only" not in {c for c, _ in judge_title(
        "For coffee lovers: Harvest Row Organic Coffee Beans", coffee, lex, brands, "adv-9")}
    # a framing with no product word at all is a fragment, as before
    assert "fragment" in codes(lex, "For weekend joggers", SHOES)


def test_catalog_words_are_interests(lex):
    catalog = catalog_words(["Brewline Espresso Machine, 15 bar", "Voltaro Wireless Earbuds"],
                            ["home_kitchen", "electronics"], ["Brewline", "Voltaro"], lex)
    assert {"espresso", "machin", "kitchen"} <= catalog and "voltaro" not in catalog
    title = "For espresso lovers: Hearthline Programmable Electric Kettle"
    assert "fabricated_word" in codes(lex, title, KETTLE)  # not an interest word by itself
    assert findings(lex, title, KETTLE, catalog) == []  # a product type of this cycle
    # a protected audience never becomes an interest, even when an ad names it
    catalog = catalog_words(["Cozyfeet Slippers for Women"], ["fashion"], ["Cozyfeet"], lex)
    assert "women" not in catalog


def test_framings_are_recognized_by_form(lex):
    slot, stop = lex.grounding.audience, lex.grounding.stopwords

    def framed(title):
        raw = tuple(tokens(title))
        toks = stemmed(raw)
        return [" ".join(v for _, v in raw[a:b])
                for _s, _e, a, b in audience_framings(title, raw, toks, slot, stop, set())]

    assert framed("For busy office workers: Hearthline Kettle") == ["busy office workers"]
    assert framed("Skincare lovers: Verdant Glow Moisturizer") == ["skincare lovers"]
    assert framed("Hikers' pick: Summitcraft Shoes") == ["hikers"]
    assert framed("Summitcraft Shoes for weekend joggers") == ["weekend joggers"]
    assert framed("Hearthline Kettle, for travelers, 1500 watts") == ["travelers"]
    assert framed("Home baristas: Hearthline Kettle") == ["home baristas"]
    assert framed("Gamers, meet the Fragstorm Mouse Pad") == ["gamers"]
    assert framed("For board game nights: Brickwise Strategy Game") == ["board game nights"]
    # not audiences: a use, a duration, a value
    assert framed("Summitcraft Shoes for night use") == []
    assert framed("Voltaro Earbuds for 30 hours of playback") == []
    assert framed("Summitcraft Shoes built for durability") == []
    assert framed("Home baristas") == []  # a leading clause needs a title after it


def test_training_filter_accepts_interest_framings():
    # the Creative LLM's data filter shares the grounding check (no catalog there)
    src = KETTLE
    assert fabrication_reasons("For busy office workers: Hearthline Electric Kettle",
                               src.original_title, src.selling_points, None) == []
    assert fabrication_reasons("For moms: Hearthline Electric Kettle", src.original_title,
                               src.selling_points, None) == ["fabricated_word"]
