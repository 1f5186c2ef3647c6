"""The personalization instruments (jobs/stages/personalization.py): fidelity rewards titles
that fit their own cluster's clicks, is 50% for one title everywhere, and falls below
chance when the titles are swapped; distinct titles; query uptake."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.stages.personalization import (
    InterestSpace,
    cross_cluster_fidelity,
    distinct_titles,
    plan_kept,
    query_uptake,
    shuffled_interests,
)

ITEMS = {"boots": "Waterproof hiking boots for the trail",
         "pack": "Trail backpack, hiking daypack",
         "chair": "Ergonomic office desk chair",
         "lamp": "Desk lamp for the home office",
         "toy": "Building blocks toy for kids"}


@pytest.fixture(scope="module")
def space():
    return InterestSpace(ITEMS.values())


@pytest.fixture(scope="module")
def interests(space):
    clicks = [("hikers", "boots"), ("hikers", "pack"), ("hikers", "boots"),
              ("office", "chair"), ("office", "lamp"), ("kids", "toy"),
              ("nobody", "not-an-item")]
    return space.interests(clicks, ITEMS)


def test_interests_are_click_weighted_and_readable(space, interests):
    assert set(interests) == {"hikers", "office", "kids"}  # an unknown item counts nothing
    assert all(abs(np.linalg.norm(v) - 1) < 1e-6 for v in interests.values())
    assert space.summary(interests["hikers"], 3).split(", ")[0] in {"hiking", "trail", "boots"}
    assert "office" in space.summary(interests["office"])
    # what sets a cluster apart from the mean, without the excluded (brand) words
    mean = np.mean(list(interests.values()), axis=0)
    apart = space.summary(interests["hikers"], 4, against=mean, exclude={"trail"}).split(", ")
    assert "trail" not in apart and set(apart) <= {"hiking", "boots", "backpack", "daypack",
                                                   "waterproof"}


def test_fidelity_rewards_fitting_titles_and_not_one_title_for_all(space, interests):
    fitting = {"ad": {"hikers": "Lamp for the trail, hiking ready",
                      "office": "Lamp for the home office desk",
                      "kids": "Lamp for kids toy corner"}}
    swapped = {"ad": {"hikers": "Lamp for the home office desk",
                      "office": "Lamp for kids toy corner",
                      "kids": "Lamp for the trail, hiking ready"}}
    same = {"ad": dict.fromkeys(("hikers", "office", "kids"), "Desk Lamp")}
    assert cross_cluster_fidelity(fitting, interests, space) == {
        "pairs": 3, "ads": 1, "fidelity": 1.0}
    assert cross_cluster_fidelity(swapped, interests, space)["fidelity"] == 0.0
    assert cross_cluster_fidelity(same, interests, space)["fidelity"] == 0.5
    # the control judges each cluster against another's interests: fitting titles lose
    control = cross_cluster_fidelity(fitting, shuffled_interests(interests), space)
    assert control["fidelity"] < 0.5
    # a cluster without interests is left out, not guessed
    assert cross_cluster_fidelity({"ad": {"hikers": "a", "ghost": "b"}}, interests,
                                  space)["pairs"] == 0


def test_shuffled_interests_move_every_cluster(interests):
    moved = shuffled_interests(interests, seed=3)
    assert set(moved) == set(interests)
    assert all(not np.array_equal(moved[k], interests[k]) for k in interests)


def test_distinct_titles():
    d = distinct_titles({"a": ["X", "y", "z"], "b": ["x", "x", "X "], "c": ["only", "two"]})
    assert d == {"ads": 2, "share_3plus_distinct": 0.5, "one_title_for_all": 0.5,
                 "mean_distinct_ratio": round((1 + 1 / 3) / 2, 4)}
    assert distinct_titles({})["share_3plus_distinct"] is None


def test_query_uptake_counts_supported_query_words_only():
    rows = [
        # takes up "trail", which the ad supports and the query-free title lacks
        {"query": "trail boots", "sources": ["Hiking Boots", "Trail ready"],
         "query_aware": "Trail ready Hiking Boots", "query_free": "Hiking Boots"},
        # "boots" is in both titles: no uptake
        {"query": "boots", "sources": ["Hiking Boots"], "query_aware": "Hiking Boots",
         "query_free": "Hiking Boots, waterproof"},
        # the ad supports no query word: not counted
        {"query": "sandals", "sources": ["Hiking Boots"], "query_aware": "Hiking Boots",
         "query_free": "Hiking Boots"},
    ]
    # the second pair's query only repeats the original title: no title could take it up,
    # so among the "open" pairs the uptake is 1 of 1
    assert query_uptake(rows) == {"pairs": 2, "uptake": 0.5, "open_pairs": 1,
                                  "uptake_open": 1.0}


def test_plan_kept_needs_every_word_of_every_claim():
    rows = [("Gel Pen, Quick-drying ink", ["Quick-drying ink"]),
            ("Gel Pen, Black", ["Quick-drying ink"]),  # the claim is missing
            ("Gel Pen, Quick-drying", ["Quick-drying ink"]),  # half a claim is not the claim
            ("Gel Pen", []), ("Gel Pen", None)]  # no plan: left out
    assert plan_kept(rows) == {"variants": 3, "share": round(1 / 3, 4)}
    assert plan_kept([]) == {"variants": 0, "share": None}
