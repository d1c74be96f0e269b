"""Multi-interest user towers (single activation, ComiRec-SA, MIND), regularisers, soft activation
and dynamic capacity. Tiny shapes so the whole file compiles and runs in seconds on CPU."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirecall_jax.models import regularizers
from mirecall_jax.models.activation import label_aware_attention
from mirecall_jax.models.capacity import activation_share, prune_interests
from mirecall_jax.models.comirec_sa import ComiRecSA
from mirecall_jax.models.mind import MIND, dynamic_interest_count
from mirecall_jax.models.single_activation import SingleActivation
from mirecall_jax.train.step import select_activated
from random_batch import random_batch

B, L, T, D, K = 4, 6, 2, 8, 3
N_ITEMS, N_UP, N_TAGS = 50, 10, 12
COMMON = dict(num_items=N_ITEMS, num_uploaders=N_UP, num_tags=N_TAGS, dim=D, num_interests=K)

FAMILIES = {
    # Penalty weights on (cos, attn; orth off) for the penalties test; the gradient test's loss has none.
    "sa_queries": lambda: SingleActivation(**COMMON, max_len=L, dropout=0.0, readout="queries",
                                           cos_weight=0.5, attn_weight=2.0),
    "sa_attentive": lambda: SingleActivation(**COMMON, max_len=L, num_layers=1, dropout=0.0, readout="attentive"),
    "comirec_sa": lambda: ComiRecSA(**COMMON, max_len=L),
    "mind": lambda: MIND(**COMMON, dynamic_k=False),
}


def make_batch(seed: int = 0, lengths=(6, 3, 1, 4)) -> dict:
    return random_batch(seed, lengths, L, T, N_ITEMS, N_UP, N_TAGS)


@functools.cache
def init(name: str):
    model = FAMILIES[name]()
    variables = jax.jit(model.init)(jax.random.key(0), make_batch())
    encode = jax.jit(lambda v, b: model.apply(v, b, method=model.encode_users))
    return model, variables, encode


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_shapes_masks_and_item_tower(name):
    model, variables, encode = init(name)
    batch = make_batch()
    out = encode(variables, batch)
    assert out.interests.shape == (B, K, D) and out.mask.shape == (B, K) and out.mask.dtype == bool
    assert out.mask.all()
    assert out.aux["attention"].shape == (B, K, L)
    padded = np.broadcast_to(~batch["mask"][:, None, :], (B, K, L))
    np.testing.assert_array_equal(np.asarray(out.aux["attention"])[padded], 0.0)  # padding gets no weight
    assert np.isfinite(np.asarray(out.interests)).all()
    # The item tower is the id table only: side features of the target do not matter.
    ids = jnp.array([[1, 2], [3, 0]])
    items = model.apply(variables, ids, jnp.ones_like(ids), jnp.ones(ids.shape + (T,), jnp.int32), method=model.encode_items)
    table = variables["params"]["items"]["item_embedding"]["embedding"]
    np.testing.assert_array_equal(items, table[ids])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_padding_invariance(name):
    _, variables, encode = init(name)
    batch = make_batch()
    noisy = dict(batch)
    rng = np.random.default_rng(1)
    pad = ~batch["mask"]
    noisy["history"] = np.where(pad, rng.integers(1, N_ITEMS, (B, L)), batch["history"]).astype(np.int32)
    noisy["history_uploader"] = np.where(pad, rng.integers(1, N_UP, (B, L)), batch["history_uploader"]).astype(np.int32)
    noisy["history_tags"] = np.where(pad[..., None], rng.integers(1, N_TAGS, (B, L, T)), batch["history_tags"]).astype(np.int32)
    a, b = encode(variables, batch), encode(variables, noisy)
    np.testing.assert_allclose(a.interests, b.interests, atol=1e-5)
    # ... while changing a *valid* item does change the output (the test can fail).
    changed = dict(batch, history=batch["history"].copy())
    changed["history"][0, -1] = (changed["history"][0, -1] % (N_ITEMS - 1)) + 1
    assert not np.allclose(encode(variables, changed).interests[0], a.interests[0], atol=1e-5)


def test_single_activation_side_features_and_penalties():
    model, variables, encode = init("sa_queries")
    batch = make_batch()
    out = encode(variables, batch)
    raw, pen = out.aux["disagreement"], out.aux["penalties"]
    assert set(raw) == {"cos", "orth", "attn"} and set(pen) == {"cos", "attn"}  # orth weight 0 -> absent
    np.testing.assert_allclose(pen["cos"], 0.5 * raw["cos"], rtol=1e-6)
    np.testing.assert_allclose(pen["attn"], 2.0 * raw["attn"], rtol=1e-6)
    # Side features feed the user tower: a different uploader at a valid position changes it.
    other = dict(batch, history_uploader=batch["history_uploader"].copy())
    other["history_uploader"][0, -1] = (other["history_uploader"][0, -1] + 1) % N_UP
    assert not np.allclose(encode(variables, other).interests[0], out.interests[0])
    with pytest.raises(ValueError, match="readout"):
        SingleActivation(**COMMON, max_len=L, readout="mean").init(jax.random.key(0), batch)


def test_select_activated_picks_best_valid_interest():
    interests = jnp.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]],
                           [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]],
                           [[-1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0]]])  # [3, 3, 2]
    mask = jnp.array([[True, True, True], [True, True, False], [False, True, True]])
    target = jnp.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    activated, index = select_activated(interests, mask, target)
    np.testing.assert_array_equal(index, [2, 1, 1])  # row 1: the best (slot 2) is masked; row 2: slot 0 masked
    np.testing.assert_array_equal(activated, interests[jnp.arange(3), index])


def test_gradient_reaches_only_the_activated_query():
    model, variables, _ = init("sa_queries")
    batch = {k: v[:1] for k, v in make_batch().items()}
    params = variables["params"]

    def loss(p):
        out = model.apply({"params": p}, batch, method=model.encode_users)
        target = model.apply({"params": p}, batch["target"], method=model.encode_items)
        user, index = select_activated(out.interests, out.mask, target)
        return -jnp.sum(user * target), index

    grads, index = jax.jit(jax.grad(loss, has_aux=True))(params)
    g = np.abs(np.asarray(grads["pool"]["queries"])).sum(-1)  # [K]
    k = int(index[0])
    assert g[k] > 0
    np.testing.assert_array_equal(np.delete(g, k), 0.0)


def _np_unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def test_regularisers_match_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 4, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 0, 0]], bool)
    n = _np_unit(m)
    cos, cnt, orth = 0.0, 0, 0.0
    for b in range(3):
        valid = np.flatnonzero(mask[b])
        for a, i in enumerate(valid):
            for j in valid[a + 1:]:
                cos, cnt = cos + abs(n[b, i] @ n[b, j]), cnt + 1
        nv = n[b, valid]
        orth += np.sum((nv @ nv.T - np.eye(len(valid))) ** 2)
    np.testing.assert_allclose(regularizers.cosine_penalty(m, mask), cos / cnt, rtol=1e-5)
    np.testing.assert_allclose(regularizers.orthogonality_penalty(m, mask), orth / 3, rtol=1e-5)
    full = sum(np.sum((n[b] @ n[b].T - np.eye(4)) ** 2) for b in range(3)) / 3
    np.testing.assert_allclose(regularizers.orthogonality_penalty(m), full, rtol=1e-5)
    att = rng.random((3, 4, 6)).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    ref = np.mean([np.sum((a @ a.T - np.eye(4)) ** 2) for a in att])
    np.testing.assert_allclose(regularizers.attention_overlap_penalty(att), ref, rtol=1e-5)
    # Orthonormal interests / one-hot disjoint attention are penalty-free.
    eye = np.broadcast_to(np.eye(4, 5, dtype=np.float32), (2, 4, 5))
    assert float(regularizers.cosine_penalty(eye)) == 0.0 and float(regularizers.orthogonality_penalty(eye)) < 1e-10
    assert float(regularizers.attention_overlap_penalty(np.eye(4, 6, dtype=np.float32)[None])) == 0.0


def test_mind_dynamic_interest_count():
    lengths = np.array([1, 2, 3, 4, 7, 8, 100])
    expected = [1, 1, 1, 2, 2, 3, 4]
    np.testing.assert_array_equal(dynamic_interest_count(jnp.asarray(lengths), 4), expected)
    # Through the module: mask sums follow K'_u (L = 128 so a 100-item history fits).
    model = MIND(num_items=N_ITEMS, num_uploaders=N_UP, num_tags=N_TAGS, dim=D, num_interests=4)
    mask = np.arange(128)[None, :] >= 128 - lengths[:, None]
    hist = np.where(mask, 1 + np.arange(128) % (N_ITEMS - 1), 0).astype(np.int32)
    n = len(lengths)
    batch = {"history": hist, "history_uploader": np.zeros_like(hist), "history_tags": np.zeros((n, 128, T), np.int32),
             "mask": mask, "target": np.ones(n, np.int32)}
    variables = jax.jit(model.init)(jax.random.key(0), batch)
    out = jax.jit(functools.partial(model.apply, method=model.encode_users))(variables, batch)
    np.testing.assert_array_equal(out.mask.sum(-1), expected)
    assert out.mask[:, 0].all()  # the first K'_u slots are the valid ones


def test_mind_routing_breaks_symmetry_and_is_deterministic_at_eval():
    model, variables, encode = init("mind")
    batch = make_batch()
    a, b = encode(variables, batch), encode(variables, batch)
    np.testing.assert_array_equal(a.interests, b.interests)
    row = np.asarray(a.interests[0])  # the full-length history: interests must not all coincide
    assert np.abs(row[:, None] - row[None]).max() > 1e-4
    # Train mode draws the routing init from the 'dropout' stream: different keys, different routes.
    t = lambda key: model.apply(variables, batch, train=True, method=model.encode_users, rngs={"dropout": key})  # noqa: E731
    assert not np.allclose(t(jax.random.key(1)).interests, t(jax.random.key(2)).interests)


def test_label_aware_attention_limits():
    rng = np.random.default_rng(0)
    # Scores <m_k, e> = first coordinate, |s| in [1.2, 3]: large p then separates them without
    # overflowing float32 (3^41 ~ 4e19). Row 4 is all negative: the least negative must win.
    first = rng.uniform(1.2, 3.0, (5, 4)) * np.array([[1], [1], [-1], [1], [-1]]) * np.array([1, -1, 1, 1])
    interests = jnp.asarray(np.concatenate([first[..., None], rng.normal(size=(5, 4, 2))], -1).astype(np.float32))
    target = jnp.asarray(np.tile([1.0, 0.0, 0.0], (5, 1)).astype(np.float32))
    mask = jnp.array([[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 0], [1, 1, 0, 1]], bool)
    hard, _ = select_activated(interests, mask, target)
    np.testing.assert_allclose(label_aware_attention(interests, mask, target, 41.0), hard, atol=1e-5)
    np.testing.assert_allclose(label_aware_attention(interests, mask, target, 40.0), hard, atol=1e-5)
    m = np.asarray(mask, np.float32)
    uniform = (np.asarray(interests) * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    np.testing.assert_allclose(label_aware_attention(interests, mask, target, 0.0), uniform, rtol=1e-5, atol=1e-6)
    # Even p keeps the sign: a strongly anti-aligned interest must not win.
    anti = jnp.array([[[1.0, 0.0], [-10.0, 0.0]]])
    out = label_aware_attention(anti, jnp.ones((1, 2), bool), jnp.array([[1.0, 0.0]]), 8.0)
    np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-6)


def test_capacity_share_and_pruning():
    act_user = np.array([[6, 2, 0, 0],    # user 0: 8 records -> own share [.75, .25, 0, 0]
                         [1, 0, 0, 0],    # user 1: 1 record  -> global share
                         [0, 0, 0, 0]])   # user 2: none      -> global share
    act_global = np.array([10, 10, 0, 20])
    share = activation_share(act_user, act_global, np.array([0, 1, 2]), min_count=5)
    np.testing.assert_allclose(share, [[0.75, 0.25, 0, 0], [0.25, 0.25, 0, 0.5], [0.25, 0.25, 0, 0.5]])
    assert isinstance(share, np.ndarray)
    jshare = activation_share(jnp.asarray(act_user), jnp.asarray(act_global), jnp.array([0, 1, 2]), 5)
    np.testing.assert_allclose(jshare, share)
    # No records at all -> uniform global share (nothing pruned at threshold <= 1/K).
    np.testing.assert_allclose(activation_share(np.zeros((1, 4)), np.zeros(4), np.array([0]), 1), [[0.25] * 4])

    mask = np.ones((3, 4), bool)
    t = np.float32(0.25)
    below, above = np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(1))
    s = np.array([[t, below, above, 0.5 - 2 * t], [t, t, t, t], [0.1, 0.2, 0.3, 0.4]], np.float32)
    np.testing.assert_array_equal(prune_interests(mask, s, t), [[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    # Never prunes everything: the most-activated *valid* interest survives any threshold.
    mask2 = np.array([[1, 1, 0, 1], [0, 0, 0, 0]], bool)
    s2 = np.array([[0.1, 0.2, 0.6, 0.1], [0.4, 0.3, 0.2, 0.1]], np.float32)
    np.testing.assert_array_equal(prune_interests(mask2, s2, 0.9), [[0, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(prune_interests(jnp.asarray(mask2), jnp.asarray(s2), 0.9), [[0, 1, 0, 0], [0, 0, 0, 0]])


def test_train_step_with_penalties_and_activation_records():
    """Through the shared train step (jit, dropout on): penalties reach the loss and the metrics,
    the activation records count one win per example."""
    import optax

    from mirecall_jax.config import base_config
    from mirecall_jax.train.state import create_state
    from mirecall_jax.train.step import make_train_step

    model = SingleActivation(**COMMON, max_len=L, num_layers=1, dropout=0.1, readout="attentive", orth_weight=0.3)
    batch = make_batch()
    tx = optax.adam(1e-2)
    aux = {"activation_global": jnp.zeros(K), "activation_user": jnp.zeros((B, K))}
    tables = {"neg_probs": jnp.full(N_ITEMS, 1.0 / (N_ITEMS - 1)).at[0].set(0.0),
              "item_uploader": jnp.arange(N_ITEMS) % N_UP, "item_tags": jnp.ones((N_ITEMS, T), jnp.int32)}
    state = jax.jit(lambda r: create_state(model, tx, batch, r, aux, tables))(jax.random.key(0))
    config = base_config()
    config.loss.update(dict(kind="sampled_softmax", num_negatives=8, logq_correction=False))
    state, metrics = jax.jit(make_train_step(model, tx, config))(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    assert float(state.aux["activation_global"].sum()) == B
    np.testing.assert_array_equal(state.aux["activation_user"].sum(-1), np.ones(B))
    assert set(k for k in metrics if k.startswith("penalty/")) == {"penalty/orth"}
    np.testing.assert_allclose(metrics["loss"], metrics["main_loss"] + metrics["penalty/orth"], rtol=1e-6)


def test_fresh_encoder_block_is_the_identity_and_learns_away_from_it():
    """Residual branches start at zero (EncoderBlock), yet every parameter still gets gradient after one step."""
    from mirecall_jax.models.single_activation import EncoderBlock

    block = EncoderBlock(num_heads=2, mlp_dim=16, dropout=0.0)
    x = jax.random.normal(jax.random.key(0), (3, 5, 8))
    mask = jnp.arange(5)[None, :] < jnp.array([[5], [2], [1]])
    params = block.init(jax.random.key(1), x, mask, False)
    np.testing.assert_array_equal(block.apply(params, x, mask, False), x)
    loss = lambda p: jnp.sum(jnp.sin(block.apply(p, x, mask, False)))  # noqa: E731
    grad = jax.grad(loss)(params)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grad)
    assert not np.allclose(block.apply(params, x, mask, False), x)
    grad = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grad)[0]:
        assert float(jnp.abs(g).sum()) > 0, jax.tree_util.keystr(path)
