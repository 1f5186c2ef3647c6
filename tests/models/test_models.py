"""Model tier: shapes, invariances, and that the losses go down."""

from __future__ import annotations

import pytest
import torch

from models.item_llm import ITEM_TOKEN, ItemLLM, ItemLLMConfig
from models.predictor import ItemUserPredictor, PredictorConfig
from models.user_llm import UserLLM, UserLLMConfig, left_pad


@pytest.fixture(scope="module")
def item_llm():
    return ItemLLM(ItemLLMConfig(max_tokens=16))


def test_item_token_follows_the_text_and_budget_holds(item_llm):
    batch = item_llm.tokenize(["Voltaro Waterproof Wireless Earbuds | Voltaro | electronics",
                               "a " * 100, ""])
    ids, pos = batch["input_ids"], batch["item_pos"]
    assert ids.shape[1] <= 16
    for row, p in zip(ids, pos, strict=True):
        assert row[p] == item_llm.item_token_id
        assert item_llm.tokenizer.convert_ids_to_tokens(int(row[p])) == ITEM_TOKEN
    assert batch["text_tokens"].tolist()[2] == 0  # an empty text tokenizes to nothing
    assert batch["text_tokens"][1] == 16 - 3  # truncated: [CLS] text [ITEM] [SEP]


def test_item_embeddings_are_finite_deterministic_and_padding_invariant(item_llm):
    texts = ["Hearthline Programmable Rice Cooker", "Lumelle Vegan Vitamin C Serum, Travel Size"]
    emb, _ = item_llm.embed(texts)
    assert emb.shape == (2, item_llm.dim) and torch.isfinite(emb).all()
    alone, _ = item_llm.embed(texts[:1])  # batched with a longer text = same embedding
    assert torch.allclose(alone[0], emb[0], atol=1e-5)
    again, _ = item_llm.embed(texts)
    assert torch.equal(again, emb)
    assert not torch.allclose(emb[0], emb[1])


def test_item_llm_saves_and_loads(tmp_path, item_llm):
    item_llm.save(tmp_path / "item")
    loaded = ItemLLM.load(tmp_path / "item")
    text = ["Northloom Slim Fit Denim Jacket"]
    assert torch.allclose(loaded.embed(text)[0], item_llm.embed(text)[0], atol=1e-6)


def small_user_llm(**kw) -> UserLLM:
    torch.manual_seed(0)
    return UserLLM(UserLLMConfig(item_dim=8, hidden_size=16, num_layers=1, num_heads=2,
                                 intermediate_size=32, max_history=6, **kw)).eval()


def test_user_llm_shapes_left_padding_and_causality():
    model = small_user_llm()
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    x, mask = left_pad([a, b], 6)
    assert x.shape == (2, 5, 8) and mask.tolist()[0] == [0, 0, 1, 1, 1]
    states, users = model(x, mask)
    assert states.shape == (2, 5, 8) and users.shape == (2, 8)
    x1, m1 = left_pad([a], 6)  # the same history alone: no padding
    with torch.no_grad():
        _, alone = model(x1, m1)
    assert torch.allclose(alone[0], users[0], atol=1e-5)  # padding does not leak in
    changed = b.clone()
    changed[-1] += 1.0  # change the most recent item of user b
    xc, mc = left_pad([a, changed], 6)
    with torch.no_grad():
        states_c, users_c = model(xc, mc)
    assert torch.allclose(states_c[1, :-1], states[1, :-1], atol=1e-5)  # causal: past unchanged
    assert not torch.allclose(users_c[1], users[1])
    with torch.no_grad():
        none, only_users = model(x, mask, with_states=False)
    assert none is None and torch.allclose(only_users, users, atol=1e-6)
    long_x, long_m = left_pad([torch.randn(20, 8)], 6)
    assert long_x.shape[1] == 6  # most recent max_history kept


def test_user_llm_round_trip(tmp_path):
    model = small_user_llm()
    model.save(tmp_path / "u")
    loaded = UserLLM.load(tmp_path / "u").eval()
    x, mask = left_pad([torch.randn(4, 8)], 6)
    with torch.no_grad():
        assert torch.allclose(loaded(x, mask)[1], model(x, mask)[1])


def test_predictor_learns_a_simple_rule():
    """Positives: item == user (plus noise); negatives: unrelated. AUC should go up."""
    torch.manual_seed(0)
    model = ItemUserPredictor(PredictorConfig(dim=8, depth=2, width=32, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    users = torch.randn(256, 8)
    pos = users + 0.1 * torch.randn(256, 8)
    neg = torch.randn(256, 8)
    x_u, x_i = torch.cat([users, users]), torch.cat([pos, neg])
    y = torch.cat([torch.ones(256), torch.zeros(256)])
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x_u, x_i), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model(users[:4], pos[:4]).shape == (4,)


def test_history_skip_adds_the_mean_of_the_history_to_u(tmp_path):
    """With history_skip, U = the decoder's state at [USER] + gate * mean(history items),
    padding excluded; it survives a save/load, and models saved before load without it."""
    plain = small_user_llm()
    skip = small_user_llm(history_skip=True)
    skip.load_state_dict(plain.state_dict(), strict=False)  # same decoder and heads
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    x, mask = left_pad([a, b], 6)
    with torch.no_grad():
        _, u_plain = plain(x, mask)
        _, u_skip = skip(x, mask)
    expected = u_plain + torch.stack([a.mean(0), b.mean(0)])  # gate starts at 1
    assert torch.allclose(u_skip, expected, atol=1e-5)
    skip.save(tmp_path / "s")
    loaded = UserLLM.load(tmp_path / "s").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x, mask)[1], u_skip, atol=1e-6)
    assert not UserLLM.load(_saved(plain, tmp_path / "p")).config.history_skip


def _saved(model: UserLLM, path) -> object:
    model.save(path)
    return path
