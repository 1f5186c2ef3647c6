"""build-dataset on the tiny cycle: the grounded teacher's CoT steps, the hallucination
filter, the held-out split, counts that reconcile, and the chat teacher against a scripted
OpenAI-compatible endpoint (bad JSON, an injection-like title, a fabricated title)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from jobs.stages.badcase_rules import fabrication_reasons
from jobs.training import build_dataset
from jobs.training.teachers import ChatClient, ChatEndpoint, ChatTeacher
from tests.conftest import CYCLE, _Scripted
from tests.creator_support import creator_config, hllm_ready, trained_creator

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def built(tiny_cycle, tmp_path_factory):
    cfg, _ = trained_creator(tiny_cycle, tmp_path_factory)  # builds the dataset first
    from jobs.platform.lake import read_manifest, stage_dir

    return cfg, read_manifest(stage_dir(cfg.lake, CYCLE, "build_dataset"))


def test_examples_follow_the_three_steps_and_pass_the_filter(built):
    cfg, m = built
    rows = pq.read_table(m["outputs"]["examples"]["path"]).to_pylist()
    assert rows and m["teacher"] == "grounded"
    budget = cfg.creator.teacher.max_added_chars
    for r in rows:
        profile = json.loads(r["profile"])
        assert set(profile) == {"long_term_interests", "short_term_interests",
                                "purchasing_preferences", "user_needs", "description"}
        assert profile["description"] == r["description"] and profile["long_term_interests"]
        assert r["original_title"] in r["title"]  # the original is kept, content added
        assert 0 <= r["added_chars"] <= budget
        assert len(r["chosen_selling_points"]) <= cfg.creator.teacher.max_selling_points
        for p in r["chosen_selling_points"]:
            assert p in r["selling_points"] and p in r["title"]
        if r["user_information"]:
            assert r["title"].lower().startswith(r["user_information"].lower())
        assert fabrication_reasons(r["title"], r["original_title"], r["selling_points"],
                                   r["query"]) == []
    assert any(r["query"] for r in rows) and any(r["query"] is None for r in rows)


def test_split_is_by_user_and_counts_reconcile(built):
    cfg, m = built
    rows = pq.read_table(m["outputs"]["examples"]["path"]).to_pylist()
    rejected = pq.read_table(m["outputs"]["rejected"]["path"]).to_pylist()
    c = m["counts"]
    assert c["examples"] == len(rows) == c["train_examples"] + c["eval_examples"]
    assert c["rejected"] == len(rejected) == sum(c["rejected_by_reason"].values())
    split = {}
    for r in rows:
        assert split.setdefault(r["user_id"], r["split"]) == r["split"]  # one split per user
        assert r["split"] == build_dataset.split_of(r["user_id"], cfg.creator.dataset.eval_share)
    assert c["eval_examples"] > 0
    per_user = {}
    for r in rows:
        per_user[r["user_id"]] = per_user.get(r["user_id"], 0) + 1
    assert max(per_user.values()) <= cfg.creator.dataset.examples_per_user
    # every user is accounted for: with examples, or rejected with a reason
    users = {r["user_id"] for r in rows} | {r["user_id"] for r in rejected}
    assert len(users) == c["users"]


def test_rerun_is_skipped_when_nothing_changed(built):
    cfg, m = built
    again = build_dataset.run(cfg, CYCLE, progress=False)
    assert again["skipped"] and again["finished_at"] == m["finished_at"]


def test_chat_teacher_json_retries_and_filter(tiny_cycle, tmp_path, chat_server):  # noqa: F811
    cfg = creator_config(tiny_cycle, tmp_path, "creator.teacher.kind=chat",
                         "creator.dataset.max_users=3", "creator.dataset.examples_per_user=1",
                         "creator.dataset.query_share=0", "creator.teacher.retries=1",
                         "creator.teacher.backoff_s=0", "creator.teacher.concurrency=1")
    hllm_ready(cfg)
    features = build_dataset._features(cfg, CYCLE)
    histories, clicked = build_dataset.load_histories(features, 3)
    import pyarrow.parquet as pq_

    ads = {r["ad_id"]: r for r in pq_.read_table(
        features["outputs"]["active_ads"]["path"]).to_pylist()}
    targets = [next(a for a in clicked[h.user_id] if a in ads) for h in histories
               if any(a in ads for a in clicked[h.user_id])]
    assert len(targets) == 3
    profile = json.dumps({"long_term_interests": ["x"], "short_term_interests": [],
                          "purchasing_preferences": [], "user_needs": [],
                          "description": "Likes things."})
    _Scripted.script = [
        (200, profile), (200, "I cannot answer in JSON"), (200, "still not JSON"),  # 2 users ok,
        (200, profile),                                                            # 1 fails
        # titles: one grounded (a marketing phrase added), one that fabricates a claim
        (200, json.dumps({"user_information": "", "selling_points": [],
                          "title": ads[targets[0]]["title"] + ", shop now"})),
        (200, json.dumps({"user_information": "", "selling_points": [],
                          "title": ads[targets[2]]["title"] + ", 50% off today only"})),
        # the LLM hallucination check for both titles
        (200, '{"new_information": [], "conflicting_information": []}'),
        (200, '{"new_information": ["50% off"], "conflicting_information": []}'),
    ]
    client = ChatClient(ChatEndpoint(chat_server, "big-model"), cfg.creator.teacher.cache_dir,
                        timeout_s=5, retries=1, backoff_s=0, concurrency=1)
    teacher = ChatTeacher(cfg, client)
    m = build_dataset.run(cfg, CYCLE, progress=False, teacher=teacher)
    rejected = pq.read_table(m["outputs"]["rejected"]["path"]).to_pylist()
    reasons = sorted(f"{r['step']}:{r['reason']}" for r in rejected)
    assert len(reasons) == 2 and reasons[0].startswith("filter:fabricated_")
    assert reasons[1] == "profile:invalid_json"
    rows = pq.read_table(m["outputs"]["examples"]["path"]).to_pylist()
    assert [r["title"] for r in rows] == [ads[targets[0]]["title"] + ", shop now"]
    assert rows[0]["teacher"] == "chat"
    # the ad text reached the endpoint quoted inside the data block of the prompt
    title_prompt = _Scripted.seen[4]["messages"][0]["content"]
    assert json.dumps(ads[targets[0]]["title"]) in title_prompt and "<ad>" in title_prompt
    # a re-run costs nothing: every reply comes from the cache
    calls = len(_Scripted.seen)
    build_dataset.run(cfg, CYCLE, progress=False, force=True,
                      teacher=ChatTeacher(cfg, ChatClient(ChatEndpoint(chat_server, "big-model"),
                                                          cfg.creator.teacher.cache_dir,
                                                          retries=0, backoff_s=0)))
    assert len(_Scripted.seen) == calls + 1  # only the failed profile is asked again
