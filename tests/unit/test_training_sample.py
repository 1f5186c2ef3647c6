"""Which examples the Creative LLM trains on: groups where the same ad got different
titles for different users come first and whole (the loss can only fall by reading U)."""

from jobs.training.train_creator import sample_examples


def row(user: str, ad: str, title: str, query: str | None = None) -> dict:
    return {"user_id": user, "ad_id": ad, "title": title, "query": query}


def test_contrast_groups_come_first_and_whole():
    rows = [row("u1", "a", "A, Lifetime warranty"), row("u2", "a", "A, Price match"),
            row("u3", "b", "B, x"), row("u4", "b", "B, x"),  # same title: no contrast
            row("u5", "c", "C, y"), row("u6", "c", "C, z"), row("u7", "c", "C, y"),
            row("u8", "d", "D, q", "query"), row("u9", "d", "D, r", None)]  # query differs
    kept, contrast = sample_examples(rows, 5, seed=1)
    assert contrast == 5 and len(kept) == 5
    assert {r["user_id"] for r in kept} == {"u1", "u2", "u5", "u6", "u7"}
    assert kept == sorted(kept, key=rows.index)  # original order
    all_rows, n = sample_examples(rows, None, seed=1)
    assert all_rows == rows and n == 5
    few, _ = sample_examples(rows, 8, seed=1)
    assert len(few) == 8 and {"u1", "u2", "u5", "u6", "u7"} <= {r["user_id"] for r in few}
