"""Badcase Killer rules (no Spark): each rule on hand-written cases, the grounding contract
the Creative LLM's data filter relies on, and precision/recall on the labeled set."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.platform.config import load_config
from jobs.stages.badcase_rules import (
    AdSource,
    BrandLexicon,
    fabrication_reasons,
    judge_title,
    load_lexicons,
    stem,
    unsafe_id,
)
from jobs.stages.kill_badcases import evaluate_labeled, format_eval

SRC = AdSource("Voltaro Waterproof Wireless Earbuds, Compact",
               ["Up to 30 hours of playback", "IPX7 water resistance",
                "Free shipping on orders over $35", "Rated 4.7 out of 5 by customers"],
               "best wireless earbuds", "Voltaro")
BRANDS = BrandLexicon({"Voltaro": {"adv-1"}, "Sonique": {"adv-2"}, "Voltaro Labs": {"adv-3"}})


@pytest.fixture(scope="module")
def lex():
    return load_lexicons(load_config(environ={}).badcase)


def codes(lex, title, src=SRC, advertiser="adv-1"):
    return {c for c, _ in judge_title(title, src, lex, BRANDS, advertiser)}


def test_fabrication_reasons_contract():
    sp = SRC.selling_points
    assert fabrication_reasons("Voltaro Wireless Earbuds for runners - 30 hours of playback",
                               SRC.original_title, sp, None) == []
    assert fabrication_reasons("Shop now: waterproof ear buds, best seller", SRC.original_title,
                               sp, None) == []  # compound split, marketing phrases
    assert fabrication_reasons("Voltaro earbuds with noise cancelling", SRC.original_title, sp,
                               None) == ["fabricated_word"]
    assert fabrication_reasons("Voltaro earbuds, 40 hours of playback", SRC.original_title, sp,
                               None) == ["fabricated_number"]
    assert fabrication_reasons("Best wireless earbuds: Voltaro", SRC.original_title, sp,
                               "best wireless earbuds") == []  # grounded by the query
    # a number present elsewhere in the ad does not ground it in another meaning
    assert "fabricated_number" in fabrication_reasons(
        "Voltaro earbuds: buy 2, get 5 free", SRC.original_title, sp, None)


def test_stemming_maps_inflections_together():
    assert stem("shoes") == stem("shoe")
    assert stem("batteries") == stem("battery")
    assert stem("charging") == stem("charged") == stem("charge")


@pytest.mark.parametrize("title,expected", [
    ("Voltaro Earbuds with 30 minutes of playback", "changed_quantity"),
    ("Voltaro earbuds, now $19.99", "changed_price"),
    ("200% louder Voltaro earbuds", "percent_over_limit"),
    ("Voltaro Earbuds, loved in Paris", "location_not_in_source"),
    ("Voltaro Earbuds for New York commuters", "location_not_in_source"),
    ("Sonique sound in Voltaro earbuds", "other_advertiser_brand"),
    ("Voltaro earbuds: the best in the world", "absolute_claim"),
    # the query does not license a ranking (guideline v1): SRC's query is "best wireless
    # earbuds"
    ("Best wireless earbuds: Voltaro Waterproof Earbuds", "absolute_claim"),
    ("Voltaro earbuds cure headaches", "medical_claim"),
    ("Make money fast with Voltaro earbuds", "financial_promise"),
    ("Voltaro earbuds for seniors", "protected_attribute"),
    ("Voltaro earbuds near you", "protected_attribute"),
    ("Damn good Voltaro earbuds", "profanity"),
    ("Voltaro Voltaro earbuds", "repeated_words"),
    ("voltaro waterproof wireless earbuds, compact!", "same_as_original"),
    ("Earbuds", "title_too_short"),
    ("Voltaro earbuds " + "for runners and hikers " * 8, "title_too_long"),
    ("", "empty_title"),
    ("Voltaro earbuds for u00001234", "user_id_in_title"),
])
def test_each_rule_fires(lex, title, expected):
    assert expected in codes(lex, title)


@pytest.mark.parametrize("title", [
    "Voltaro Wireless Earbuds for runners - Up to 30 hours of playback",
    "Meet the Voltaro Waterproof Wireless Earbuds: IPX7 water resistance",
    "Voltaro compact earbuds, free shipping on orders over $35",
    "Wireless earbuds: Voltaro Waterproof Earbuds",  # the query's topic words
    "Voltaro earbuds rated 4.7 out of 5 by customers",
    "Voltaro earbuds for music lovers: IPX7 water resistance",
])
def test_clean_titles_pass(lex, title):
    assert codes(lex, title) == set()


def test_own_brand_inside_a_longer_brand_is_not_another_advertisers(lex):
    src = AdSource("Voltaro Labs Wireless Earbuds", [], None, "Voltaro Labs")
    assert "other_advertiser_brand" not in codes(lex, "Voltaro Labs earbuds for runners", src,
                                                 "adv-3")
    assert "other_advertiser_brand" in codes(lex, "Sonique earbuds for runners", src, "adv-3")


def test_a_brand_the_ad_names_itself_is_grounded(lex):
    # the ad's own title names "Sonique" (another advertiser's brand): copying it is no
    # fabrication; adding it where the ad does not is
    src = AdSource("Voltaro Labs Earbuds, works with Sonique speakers", [], None, "Voltaro Labs")
    assert "other_advertiser_brand" not in codes(lex, "Voltaro Labs Earbuds for Sonique speakers",
                                                 src, "adv-3")
    src = AdSource("Voltaro Labs Earbuds", [], None, "Voltaro Labs")
    assert "other_advertiser_brand" in codes(lex, "Voltaro Labs Earbuds for Sonique speakers",
                                             src, "adv-3")


def test_sensitive_claim_the_ad_makes_itself_is_allowed(lex):
    src = AdSource("Calmora Massage Gun", ["Doctor recommended", "5 speed settings"], None,
                   "Calmora")
    assert "medical_claim" not in codes(lex, "Calmora Massage Gun, doctor recommended", src)
    assert "medical_claim" in codes(lex, "Calmora Massage Gun cures back pain", src)


def test_unsafe_ids():
    for bad in ("../x", "a/b", "a..b", "a\x00b", "a\nb", "", None, 7, "-lead"):
        assert unsafe_id(bad)
    for ok in ("ad-0000001", "adv-00001", "cmp:1.2_x"):
        assert not unsafe_id(ok)


def test_planted_set_precision_and_recall():
    # the rule author's own planted set (tests/data/make_badcase_labeled.py): every rule
    # catches what it was written for; the hand-labeled real set is in test_badcase_eval.py
    cfg = load_config(environ={})
    result = evaluate_labeled(cfg, Path(__file__).parents[1] / "data" / "badcase_labeled.jsonl")
    fams = result["families"]
    table = format_eval(result)
    for f in ("fabrication", "numbers", "locations", "brands", "sensitive", "degenerate"):
        assert fams[f]["labeled"] >= 40, table
        assert fams[f]["recall"] >= 0.99, table
    assert fams["format"]["recall"] >= 0.95, table
    assert result["clean"]["rows"] >= 200
    assert result["clean"]["false_kill_rate"] <= 0.05, table
    for c in fams.values():
        assert c["precision"] is None or c["precision"] >= 0.9, table
