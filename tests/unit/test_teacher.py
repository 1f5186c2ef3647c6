"""The grounded teacher writes for the user: the selling point their own clicks favour, the
query's point first on a query-aware title, an activity framing only when the ad fits it,
long real selling points cut into their own clauses, and nothing outside the ad's texts."""

from __future__ import annotations

import pytest

from jobs.platform.config import load_config
from jobs.stages.badcase_rules import fabrication_reasons
from jobs.stages.point_plan import point_claims
from jobs.training.teachers import GroundedTeacher, Profile, TitleTask, UserHistory

CATALOG = [
    "Trailvane Waterproof Hiking Boots | Trailvane | sports_outdoors | Lifetime warranty | "
    "Price match guarantee",
    "Summitcraft Camping Tent | Summitcraft | sports_outdoors | 10-year warranty | "
    "Reinforced stitching",
    "Cairn & Co Trekking Poles | Cairn & Co | sports_outdoors | Lifetime warranty",
    "Voltaro Wireless Earbuds | Voltaro | electronics | Price match guarantee | "
    "Free shipping on orders over $35",
    "Hearthline Air Fryer | Hearthline | home_kitchen | Price match guarantee | "
    "Subscribe and save 10%",
    "Northloom Linen Shirt | Northloom | fashion | Free exchanges within 60 days",
    "Kitchora Rice Cooker | Kitchora | home_kitchen | Dishwasher-safe parts",
    "Fernwood Rain Jacket | Fernwood | fashion | Machine washable",
    "Quillhouse Press Mystery Novel | Quillhouse Press | books | 320 pages",
]
AD = ("Ridgeback Outdoor Lightweight Hiking Boots",
      ["Lifetime warranty", "Price match guarantee", "Weighs only 2.1 lbs"])


def history(user: str, texts: list[str]) -> UserHistory:
    return UserHistory(user, [t.split(" | ")[0] for t in texts], ["b"] * len(texts),
                       ["c"] * len(texts), texts)


@pytest.fixture(scope="module")
def teacher():
    t = GroundedTeacher(load_config(None, []))
    t.fit_catalog(CATALOG)
    return t


def task(h: UserHistory, query: str | None = None, ad=AD) -> TitleTask:
    return TitleTask(Profile([], [], [], [], ""), h, ad[0], ad[1], query, "sports_outdoors")


def test_users_with_different_clicks_get_different_points(teacher):
    durable = history("u1", [CATALOG[1], CATALOG[2], CATALOG[6], CATALOG[7]] * 2)
    thrifty = history("u2", [CATALOG[3], CATALOG[4], CATALOG[5], CATALOG[7]] * 2)
    a, b = teacher.titles([task(durable), task(thrifty)])
    assert a.selling_points == ["Lifetime warranty"]
    assert b.selling_points == ["Price match guarantee"]
    for d in (a, b):
        assert AD[0] in d.title
        assert fabrication_reasons(d.title, AD[0], AD[1], None) == []


def test_a_query_aware_title_takes_the_point_the_query_asks_for(teacher):
    durable = history("u1", [CATALOG[1], CATALOG[2], CATALOG[6]] * 2)
    d = teacher.titles([task(durable, query="hiking boots weighs only 2.1 lbs")])[0]
    assert d.selling_points[0] == "Weighs only 2.1 lbs"
    assert fabrication_reasons(d.title, AD[0], AD[1], "hiking boots weighs only 2.1 lbs") == []


def test_activity_framing_only_when_the_ad_fits_the_activity(teacher):
    hiker = history("u3", [CATALOG[0], CATALOG[1], CATALOG[2], CATALOG[3]])
    framed = teacher.titles([task(hiker)])[0]
    assert framed.title.startswith("For hiking and camping: " + AD[0])
    assert framed.user_information == "for hiking and camping"
    fryer = ("Hearthline 5-Quart Air Fryer", ["Cooks with 85% less oil"])
    plain = teacher.titles([task(hiker, ad=fryer)])[0]
    assert not plain.user_information and not plain.title.lower().startswith("for ")
    nobody = history("u4", ["Acme Binder Clips | Acme | office | Pack of 12",
                            "Acme Sticky Notes | Acme | office | 12 pads"])
    assert teacher.activity_of(nobody) is None


def test_long_real_points_are_cut_into_their_own_clauses():
    long = ("Relay/CAPACITOR hard start kit 500% incr starting torque, increased compressor "
            "starting torque")
    assert point_claims(long, 60) == ["Relay/CAPACITOR hard start kit 500% incr starting torque",
                                      "increased compressor starting torque"]
    assert point_claims("Lifetime warranty", 60) == ["Lifetime warranty"]
    # a clause is a claim of its own: never the tail of a sentence, a number is not split
    real = ("Made from PLA (or Polylactic Acid) which is a biodegradable plastic, 16,000 DPI "
            "optical sensor for precise tracking")
    assert point_claims(real, 60) == ["Made from PLA",
                                      "16,000 DPI optical sensor for precise tracking"]
    assert point_claims("", 60) == []
