"""MoE two-tower: shapes, padding, the two aggregations against hand computations, load balancing,
inference pruning, and gradients under the shared train step's loss. Tiny shapes (CPU, seconds)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mirecall_jax.models.moe import MoETwoTower, load_balance_loss
from mirecall_jax.train.state import TrainState
from mirecall_jax.train.step import make_loss_fn, select_activated
from random_batch import random_batch

B, L, T, D, E = 4, 6, 2, 8, 3
N_ITEMS, N_UP, N_TAGS = 50, 10, 12


def make_model(aggregation: str, **kw) -> MoETwoTower:
    return MoETwoTower(num_items=N_ITEMS, num_uploaders=N_UP, num_tags=N_TAGS, dim=D, num_experts=E,
                       expert_hidden=16, aggregation=aggregation, **kw)


def make_batch(seed: int = 0, lengths=(6, 3, 1, 4)) -> dict:
    return random_batch(seed, lengths, L, T, N_ITEMS, N_UP, N_TAGS)


@functools.cache
def init(gate_hidden: int = 0):
    """Parameters are the same pytree for both aggregations and any threshold, so one init each.

    Everything runs eagerly except `test_shapes_and_jit`: op-by-op dispatch of these tiny shapes is
    much cheaper than compiling a jit per configuration (the file must stay fast on 2 shared CPUs).
    """
    return make_model("max", gate_hidden=gate_hidden).init(jax.random.key(0), make_batch())


def encode(aggregation: str, train: bool, batch: dict, gate_hidden: int = 0, **kw):
    """encode_users -> (UserOutput, intermediates) with the shared parameters."""
    model = make_model(aggregation, gate_hidden=gate_hidden, balance_weight=0.5, **kw)
    return model.apply(init(gate_hidden), batch, train, method=model.encode_users, mutable=["intermediates"])


def inter(state, name):
    return np.asarray(state["intermediates"][name][0])


@pytest.mark.parametrize("aggregation", ["max", "gated"])
def test_shapes_and_jit(aggregation):
    model = make_model(aggregation, balance_weight=0.5)
    variables, batch = init(), make_batch()
    k = E if aggregation == "max" else 1
    for train in (False, True):
        out, state = encode(aggregation, train, batch)
        assert out.interests.shape == (B, k, D) and out.mask.shape == (B, k) and out.mask.dtype == bool
        assert out.mask.all()  # gate_threshold 0 keeps everything
        assert out.aux["gate"].shape == (B, E) and out.aux["gate_mass"].shape == (E,)
        np.testing.assert_allclose(np.asarray(out.aux["gate"]).sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(out.aux["gate_mass"], np.asarray(out.aux["gate"]).mean(0), rtol=1e-6)
        assert inter(state, "expert_out").shape == (B, E, D)
        assert np.isfinite(np.asarray(out.interests)).all()
        assert ("penalties" in out.aux) == train
    jitted = jax.jit(lambda v, b: model.apply(v, b, method=model.encode_users))(variables, batch)
    np.testing.assert_allclose(jitted.interests, encode(aggregation, False, batch)[0].interests, rtol=1e-5, atol=1e-6)
    ids = jnp.ones((2, 5), jnp.int32)
    assert model.apply(variables, ids, ids, jnp.ones((2, 5, T), jnp.int32), method=model.encode_items).shape == (2, 5, D)
    with pytest.raises(ValueError, match="aggregation"):
        make_model("mean").init(jax.random.key(0), batch)


@pytest.mark.parametrize("aggregation", ["max", "gated"])
def test_padding_invariance(aggregation):
    batch = make_batch()
    rng = np.random.default_rng(1)
    pad = ~batch["mask"]
    noisy = dict(batch)
    noisy["history"] = np.where(pad, rng.integers(1, N_ITEMS, (B, L)), batch["history"]).astype(np.int32)
    noisy["history_uploader"] = np.where(pad, rng.integers(1, N_UP, (B, L)), batch["history_uploader"]).astype(np.int32)
    noisy["history_tags"] = np.where(pad[..., None], rng.integers(1, N_TAGS, (B, L, T)), batch["history_tags"]).astype(np.int32)
    (a, _), (b, _) = encode(aggregation, False, batch), encode(aggregation, False, noisy)
    np.testing.assert_allclose(a.interests, b.interests, atol=1e-6)
    np.testing.assert_allclose(a.aux["gate"], b.aux["gate"], atol=1e-6)
    # Each of the three inputs at a *valid* position does change the output (the test can fail).
    for key, new in (("history", 7), ("history_uploader", 3), ("history_tags", 5)):
        changed = dict(batch, **{key: batch[key].copy()})
        changed[key][0, -1] = (changed[key][0, -1] % 9) + new  # differs from the old id, never 0
        assert not np.allclose(encode(aggregation, False, changed)[0].interests[0], a.interests[0], atol=1e-6), key


def test_max_aggregation_is_the_shared_single_activation():
    model, batch = make_model("max", balance_weight=0.5), make_batch()
    out, state = encode("max", True, batch)
    v = model.apply(init(), batch["target"], batch["target_uploader"], batch["target_tags"], method=model.encode_items)
    activated, index = select_activated(out.interests, out.mask, v)
    scores = np.einsum("bed,bd->be", inter(state, "expert_out"), np.asarray(v))  # [B, E] by hand
    np.testing.assert_allclose(np.sum(np.asarray(activated) * np.asarray(v), -1), scores.max(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(index, scores.argmax(-1))
    # Router: softmax of those scores is the routing distribution; the gate learns the argmax by CE.
    route = np.exp(scores - scores.max(-1, keepdims=True))
    route /= route.sum(-1, keepdims=True)
    np.testing.assert_allclose(inter(state, "route"), route, rtol=1e-5)
    gate = np.asarray(out.aux["gate"])
    ce = -np.log(gate[np.arange(B), scores.argmax(-1)]).mean()
    np.testing.assert_allclose(out.aux["penalties"]["router"], model.router_weight * ce, rtol=1e-5)


@pytest.mark.parametrize("gate_hidden", [0, 16])
def test_gated_user_vector_is_gate_weighted_sum(gate_hidden):
    batch = make_batch()
    for train in (True, False):
        out, state = encode("gated", train, batch, gate_hidden=gate_hidden)
        g, m = inter(state, "gate"), inter(state, "expert_out")  # [B, E], [B, E, D]
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
        assert (g > 0).all()
        np.testing.assert_allclose(out.interests[:, 0], np.einsum("be,bed->bd", g, m), rtol=1e-5, atol=1e-6)
        # It is not just one expert: the combination differs from every single expert.
        assert not any(np.allclose(out.interests[:, 0], m[:, e], atol=1e-4) for e in range(E))
        if train:
            assert set(out.aux["penalties"]) == {"balance"}  # no router loss: the gate is in the score


def numpy_balance(route: np.ndarray) -> float:
    e = route.shape[1]
    f = np.bincount(route.argmax(1), minlength=e) / route.shape[0]
    return float(e * np.sum(f * route.mean(0)))


def test_balance_loss_formula_and_minimum():
    rng = np.random.default_rng(0)
    for _ in range(3):
        logits = rng.normal(size=(16, 5)) * 2
        route = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(load_balance_loss(jnp.asarray(route, jnp.float32)), numpy_balance(route), rtol=1e-5)
    np.testing.assert_allclose(load_balance_loss(jnp.full((8, 4), 0.25)), 1.0, rtol=1e-6)  # uniform usage
    np.testing.assert_allclose(load_balance_loss(jax.nn.one_hot(jnp.zeros(8, int), 4)), 4.0, rtol=1e-6)  # collapse
    # Same routing for every example: E * max_e p_e, minimal (= 1) exactly at p uniform.
    values = []
    for p in ([0.25] * 4, [0.3, 0.25, 0.25, 0.2], [0.7, 0.1, 0.1, 0.1]):
        values.append(float(load_balance_loss(jnp.tile(jnp.asarray(p), (8, 1)))))
        np.testing.assert_allclose(values[-1], 4 * max(p), rtol=1e-6)
    assert values[0] < values[1] < values[2]
    # Module: penalty = balance_weight * formula on the sown routing distribution, both aggregations.
    for aggregation in ("max", "gated"):
        out, state = encode(aggregation, True, make_batch())
        route = inter(state, "route")
        if aggregation == "gated":
            np.testing.assert_allclose(route, out.aux["gate"])
        np.testing.assert_allclose(out.aux["balance"], numpy_balance(route), rtol=1e-5)
        np.testing.assert_allclose(out.aux["penalties"]["balance"], 0.5 * numpy_balance(route), rtol=1e-5)


def test_gate_threshold_pruning():
    batch = make_batch()
    out, _ = encode("max", False, batch, gate_threshold=0.34)
    g, mask = np.asarray(out.aux["gate"]), np.asarray(out.mask)
    top = g.argmax(-1)
    assert mask[np.arange(B), top].all()  # the argmax expert is always kept
    expected = g >= 0.34
    expected[np.arange(B), top] = True
    np.testing.assert_array_equal(mask, expected)
    assert not mask.all()  # with E = 3 not every gate can reach 0.34: something was pruned
    # A threshold above 1 keeps exactly the top expert of each user.
    out, _ = encode("max", False, batch, gate_threshold=1.1)
    np.testing.assert_array_equal(np.asarray(out.mask), np.eye(E, dtype=bool)[np.asarray(out.aux["gate"]).argmax(-1)])
    # Training never prunes: every expert competes in the argmax.
    assert np.asarray(encode("max", True, batch, gate_threshold=1.1)[0].mask).all()


@pytest.mark.parametrize("aggregation,share", [("max", True), ("gated", True), ("max", False)])
def test_gradients_reach_every_part_under_the_shared_loss(aggregation, share):
    model = make_model(aggregation, gate_hidden=8, dropout=0.1, balance_weight=0.5, share_embeddings=share)
    batch = make_batch(seed=3)
    params = model.init(jax.random.key(1), batch)["params"]
    config = ml_collections.ConfigDict(dict(
        loss=dict(kind="in_batch", num_negatives=8, negative_sampling="uniform", popularity_alpha=0.75,
                  logq_correction=False, temperature=1.0, focal_gamma=0.0),
        model=dict(activation="argmax", activation_power=1.0)))
    rng = np.random.default_rng(0)
    tables = {"item_uploader": jnp.asarray(rng.integers(0, N_UP, N_ITEMS), jnp.int32),
              "item_tags": jnp.asarray(rng.integers(0, N_TAGS, (N_ITEMS, T)), jnp.int32),
              "item_freq": jnp.full((N_ITEMS,), 1.0 / N_ITEMS), "neg_probs": jnp.full((N_ITEMS,), 1.0 / N_ITEMS)}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, aux={}, tables=tables)
    loss_fn = make_loss_fn(model, config)
    grads, (metrics, _) = jax.jit(jax.grad(loss_fn, has_aux=True))(params, state, batch, jax.random.key(2))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["penalty/balance"]) > 0
    assert ("penalty/router" in metrics) == (aggregation == "max")
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    names = {jax.tree_util.keystr(p) for p, _ in flat}
    user_tables = ("user_item_table", "user_uploader_table", "user_tag_table")
    for part in ("experts", "gate_hidden_layer", "gate_out", "item_embedding", "uploader_embedding", "tag_embedding",
                 "side_fusion", "item_hidden", "item_out") + (() if share else user_tables):
        assert any(part in n for n in names), part
    assert share != any(t in n for n in names for t in user_tables)  # shared: no second set of tables
    for path, g in flat:
        assert float(jnp.abs(g).sum()) > 0, jax.tree_util.keystr(path)
    # Every expert (not just the activated ones) receives gradient.
    per_expert = np.abs(np.asarray(grads["experts"]["w2"])).sum((1, 2))  # [E]
    assert (per_expert > 0).all()


def test_normalize_gives_unit_expert_and_video_vectors():
    batch = make_batch()
    out, _ = encode("max", False, batch, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out.interests), axis=-1), 1.0, rtol=1e-5)
    model = make_model("max", normalize=True)
    videos = model.apply(init(), batch["target"], batch["target_uploader"], batch["target_tags"],
                         method=model.encode_items)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(videos), axis=-1), 1.0, rtol=1e-5)
    # Same parameters without normalisation: the directions are the same, the norms are not 1.
    raw, _ = encode("max", False, batch, normalize=False)
    cos = np.sum(np.asarray(raw.interests) * np.asarray(out.interests), -1) / np.linalg.norm(np.asarray(raw.interests), axis=-1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


def test_shared_tables_fall_back_to_own_tables_for_side_features_the_video_tower_does_not_fuse():
    batch = make_batch()
    for use_uploader, use_tags in [(True, True), (False, True), (False, False)]:
        model = make_model("max", use_uploader=use_uploader, use_tags=use_tags)
        params = model.init(jax.random.key(0), batch)["params"]
        assert "user_item_table" not in params
        assert ("user_uploader_table" in params) != use_uploader
        assert ("user_tag_table" in params) != use_tags
        out = model.apply({"params": params}, batch, method=model.encode_users)
        assert np.isfinite(np.asarray(out.interests)).all()
