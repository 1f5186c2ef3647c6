"""The point plan: a cluster's word lift over its neighbours picks the ad's claim it gets."""

import numpy as np
import pyarrow as pa

from jobs.stages.point_plan import ClusterWordLift, choose_claims, rank_claims

STOP = {"for", "the", "and", "with", "of", "a"}
AD_TITLE = "Trailvane Hiking Boots"
AD_POINTS = ["Lifetime warranty", "Only $39", "Lightweight, packs small"]


def _lift_from(clicks_by_cluster: dict[int, list[str]], centroids: dict[int, list[float]],
               neighbours: int = 1) -> ClusterWordLift:
    texts = {"warr": "Rugged Boots | Lifetime warranty | Reinforced stitching",
             "cheap": "Budget Sandals | Only $19 | Best price",
             "light": "Ultralight Tent | Lightweight, packs small",
             "warr2": "Steel Flask | Lifetime warranty"}
    users = {f"u{c}{i}": c for c, items in clicks_by_cluster.items() for i in range(3)}
    return ClusterWordLift.from_clicks(
        pa.table({"item_hash": list(texts), "item_text": list(texts.values())}),
        pa.table({"user_id": [*users, "nobody"],  # a user with no cluster: left out
                  "item_hashes": [*(clicks_by_cluster[c] for c in users.values()),
                                  ["warr", "unknown-item"]]}),
        pa.table({"user_id": list(users), "cluster_id": list(users.values())}),
        {c: np.array(v) for c, v in centroids.items()}, neighbours, STOP)


def test_each_cluster_gets_the_claim_its_clicks_carry_more_than_its_neighbours():
    lift = _lift_from({0: ["warr", "warr2", "light"], 1: ["cheap", "cheap", "light"],
                       2: ["light", "light", "warr"]},
                      {0: [1, 0.1], 1: [0.1, 1], 2: [0.7, 0.7]})
    plans = {c: choose_claims(rank_claims(AD_TITLE, AD_POINTS, None,
                                          lambda w, c=c: lift.lift(c, w), STOP, 46),
                              None, 1, 48) for c in (0, 1, 2)}
    assert plans == {0: ["Lifetime warranty"], 1: ["Only $39"],
                     2: ["Lightweight, packs small"]}  # three audiences, three titles


def test_the_query_asks_first_and_claims_already_in_the_title_are_skipped():
    flat = lambda words: 0.0  # noqa: E731 - no audience preference: the ad's own order
    ranked = rank_claims("Trailvane Lightweight Hiking Boots", [*AD_POINTS, "lightweight"],
                         None, flat, STOP, 46)
    assert [c for _, c in ranked] == ["Lifetime warranty", "Only $39",
                                      "Lightweight, packs small"]
    ranked = rank_claims(AD_TITLE, AD_POINTS, "cheap boots only $39", flat, STOP, 46)
    assert ranked[0] == (1, "Only $39")
    # a query-aware plan: the query's claim, then the audience's
    assert choose_claims(ranked, "cheap boots only $39", 2, 48) == ["Only $39",
                                                                   "Lifetime warranty"]
    assert choose_claims(ranked, None, 2, 48) == ["Only $39"]  # query-free: one claim
    assert choose_claims(ranked, "x", 2, 12) == ["Only $39"]  # the budget holds


def test_unknown_cluster_or_words_score_zero_and_a_lone_cluster_is_its_own_baseline():
    lift = _lift_from({0: ["warr"]}, {0: [1.0, 0.0]})
    assert lift.lift(0, {"warranty"}) == 0.0  # against itself: no preference
    assert lift.lift(7, {"warranty"}) == 0.0 and lift.lift(0, set()) == 0.0
