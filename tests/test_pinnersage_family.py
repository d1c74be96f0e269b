"""PinnerSage and item2vec as recall families: table loading, the user tower, the shared loop and
evaluation end to end, and the clustering path against the synthetic log's planted interests."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirecall_jax.evaluate import _encode_users
from mirecall_jax.models.item2vec import HostArray, Item2Vec, keep_probabilities
from mirecall_jax.models.pinnersage import PinnerSage
from mirecall_jax.config import override
from mirecall_jax.pinnersage.config import pinnersage_config
from mirecall_jax.pinnersage.embeddings import load_array, load_embeddings
from test_train_loop import _tiny_config

DAY = 86_400


def _config(tmp_path, **extra):
    return override(_tiny_config(tmp_path), extra)


# ------------------------------------------------------------------------------------------ tables
VOCAB = types.SimpleNamespace(item_ids=np.array(["", "a", "b", "c"]), num_items=4)


def test_npy_aligned_loads_and_wrong_shape_names_file_and_shapes(tmp_path):
    emb = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    np.save(tmp_path / "ok.npy", emb)
    table, info = load_array(str(tmp_path / "ok.npy"), VOCAB)
    assert np.array_equal(table[1:], emb[1:]) and not table[0].any() and info["aligned_by_id"] is False

    np.save(tmp_path / "short.npy", emb[:3])
    with pytest.raises(ValueError, match=r"short\.npy.*\(3, 3\).*\(4, D\)"):
        load_array(str(tmp_path / "short.npy"), VOCAB)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_array(str(tmp_path / "nope.npy"), VOCAB)


def test_npz_with_item_ids_is_realigned_and_missing_ids_are_named(tmp_path):
    rows = {"c": [3.0, 0.0], "x": [9.0, 9.0], "a": [1.0, 0.0], "b": [2.0, 0.0]}  # shuffled, one extra id
    np.savez(tmp_path / "e.npz", embeddings=np.array(list(rows.values()), np.float32), item_ids=np.array(list(rows)))
    table, info = load_array(str(tmp_path / "e.npz"), VOCAB)
    assert np.array_equal(table, [[0, 0], [1, 0], [2, 0], [3, 0]]) and info["unused_rows"] == 1

    np.savez(tmp_path / "m.npz", embeddings=np.ones((2, 2), np.float32), item_ids=np.array(["a", "zz"]))
    with pytest.raises(ValueError, match=r"m\.npz: 2 of the dataset's 3 items .*\['b', 'c'\]"):
        load_array(str(tmp_path / "m.npz"), VOCAB)

    cfg = pinnersage_config()
    cfg.embeddings, cfg.source, cfg.normalize = "npy", str(tmp_path / "e.npz"), True
    table, info = load_embeddings(cfg, VOCAB)  # unit rows, padding stays 0
    assert np.allclose(np.linalg.norm(table[1:], axis=1), 1.0) and not table[0].any() and info["dim"] == 2


# ------------------------------------------------------------------------------------ user tower
def _two_group_table():
    """Items 1-3 around e0, 4-6 around e1 (well separated); medoids: item 2 (group A), item 5 (B)."""
    e = np.eye(4, dtype=np.float32)
    table = np.zeros((8, 4), np.float32)
    table[1], table[2], table[3] = e[0] + 0.1 * e[2], e[0], e[0] - 0.1 * e[2]
    table[4], table[5], table[6] = e[1] + 0.1 * e[3], e[1], e[1] - 0.1 * e[3]
    table[7] = e[2]
    return table


def _batch():
    # user 0: A A A A (old, 4 members) then B B B (recent); user 1: one group only (B).
    history = np.array([[0, 1, 2, 3, 1, 4, 5, 6], [0, 0, 0, 0, 0, 4, 6, 5]], np.int32)
    days = np.array([[0, 1, 2, 3, 4, 20, 21, 22], [0, 0, 0, 0, 0, 5, 6, 7]], np.int64)
    return {"user": np.array([0, 1], np.int32), "history": history, "mask": history > 0,
            "history_time": 1_600_000_000 + days * DAY}


def _interests(batch, table=None, **fields):
    table = _two_group_table() if table is None else table
    model = PinnerSage(num_items=8, dim=4, **{"num_interests": 3, "ward_threshold": 0.5, **fields})
    out = jax.jit(lambda p, b: model.apply({"params": p}, b, method=model.encode_users))({"item_embedding": table}, batch)
    return table, np.asarray(out.interests), np.asarray(out.mask), np.asarray(out.aux["num_clusters"])


def test_two_groups_give_two_medoid_interests_ordered_by_recency():
    table, vecs, mask, n = _interests(_batch(), time_unit_seconds=DAY, importance_lambda=1.0)
    assert n.tolist() == [2, 1]
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    # Recency wins over size: the recent B group (3 members) ranks before the older A group (4).
    assert np.array_equal(vecs[0, 0], table[5]) and np.array_equal(vecs[0, 1], table[2])
    assert np.array_equal(vecs[1, 0], table[5]) and not vecs[0, 2].any()
    # Without decay importance is the member count, so A (4 members) comes first: ages matter.
    _, vecs0, _, _ = _interests(_batch(), time_unit_seconds=DAY, importance_lambda=0.0)
    assert np.array_equal(vecs0[0, 0], table[2]) and np.array_equal(vecs0[0, 1], table[5])
    # Ages in actions (no timestamps needed) give the same recency order here.
    batch = {k: v for k, v in _batch().items() if k != "history_time"}
    _, vecs_pos, _, _ = _interests(batch, time_unit_seconds=0.0, importance_lambda=1.0)
    assert np.array_equal(vecs_pos, vecs)


def test_cluster_on_unit_clusters_directions_and_returns_raw_medoid_rows():
    table = _two_group_table()
    table[2] *= 3.0  # A's medoid, far from its group in raw space, same direction
    _, vecs, mask, n = _interests(_batch(), table, time_unit_seconds=DAY, importance_lambda=1.0, cluster_on_unit=True)
    assert n.tolist() == [2, 1] and np.array_equal(vecs[0, 1], table[2]) and np.array_equal(vecs[0, 0], table[5])
    _, _, _, n_raw = _interests(_batch(), table, time_unit_seconds=DAY, importance_lambda=1.0)
    assert n_raw.tolist() == [3, 1]  # in raw space the scaled row is a cluster of its own


def test_sampled_selection_is_per_user_deterministic_and_evaluate_path_jits():
    batch = _batch()
    model = PinnerSage(num_items=8, dim=4, num_interests=2, ward_threshold=0.5, selection="sample",
                       time_unit_seconds=DAY, seed=3)
    params = {"item_embedding": jnp.asarray(_two_group_table())}
    a, ma, _ = _encode_users(model, params, batch)  # the jitted call evaluate makes
    swapped = {k: v[::-1] for k, v in batch.items()}  # same users, other rows: same draws
    b, mb, _ = _encode_users(model, params, swapped)
    assert np.array_equal(np.asarray(a), np.asarray(b)[::-1]) and np.array_equal(np.asarray(ma), np.asarray(mb)[::-1])
    table = _two_group_table()
    assert {tuple(v) for v in np.asarray(a)[0]} == {tuple(table[2]), tuple(table[5])}


def test_missing_timestamps_and_training_are_refused():
    batch = {k: v for k, v in _batch().items() if k != "history_time"}
    with pytest.raises(ValueError, match="history_time"):
        _interests(batch, time_unit_seconds=DAY)
    model = PinnerSage(num_items=8, dim=4)
    with pytest.raises(ValueError, match="no user tower to train"):
        model.apply({"params": {"item_embedding": _two_group_table()}}, _batch(), True, method=model.encode_users)


# --------------------------------------------------------------------------------------- item2vec
def test_item2vec_pairs_follow_word2vec_window_weights_and_subsampling_drops_examples():
    L, B = 6, 4000
    history = np.tile(np.arange(1, L + 1, dtype=np.int32), (B, 1))
    batch = {"history": history, "mask": history > 0, "target": np.full(B, 7, np.int32)}
    model = Item2Vec(num_items=8, dim=8, window=3, mode="skipgram")
    params = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, batch)["params"]
    params = {**params, "input_embedding": {"embedding": jnp.eye(8)}}  # row i = one-hot i: reveals the pick
    out = model.apply({"params": params}, batch, True, method=model.encode_users, rngs={"dropout": jax.random.PRNGKey(1)})
    picked = np.argmax(np.asarray(out.interests[:, 0]), axis=1)
    share = np.bincount(picked, minlength=8)[4:7] / B  # items 4, 5, 6 at distance 3, 2, 1
    assert np.allclose(share, np.array([1, 2, 3]) / 6, atol=0.03), share
    # Eval readout: the pair-weighted mean of the window.
    ev = np.asarray(model.apply({"params": params}, batch, method=model.encode_users).interests[0, 0])
    assert np.allclose(ev[4:7], np.array([1, 2, 3]) / 6) and not ev[:4].any()
    # Subsampling: an item kept with probability 0 drops every example whose target it is.
    keep = np.ones(8, np.float32)
    keep[7] = 0.0
    sub = Item2Vec(num_items=8, dim=8, window=3, mode="cbow", keep_prob=HostArray(keep))
    out = sub.apply({"params": params}, batch, True, method=sub.encode_users, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.asarray(out.interests).any()
    p = keep_probabilities(np.array([0, 1000, 10, 0]), 1e-2)
    assert p[0] == 1.0 and p[3] == 1.0 and p[2] == 1.0 and 0.0 < p[1] < 1.0


# ---------------------------------------------------------------------------- end to end (shared)
def test_item2vec_trains_in_the_shared_loop_and_pinnersage_evaluates_over_it(tmp_path):
    from mirecall_jax.pinnersage.run import evaluate_pinnersage
    from mirecall_jax.train.loop import restore_for_inference, train_and_evaluate

    c = _config(tmp_path, **{"model.family": "item2vec", "model.num_interests": 1, "train.max_steps": 20,
                             "train.eval_every": 20, "loss.logq_correction": False})
    s = train_and_evaluate(c, str(tmp_path / "i2v"))
    assert s["best_step"] == 20 and 0.0 <= s["test"]["recall@50"] <= 1.0

    p = _config(tmp_path, **{"model.family": "pinnersage", "model.embed_dim": 99, "model.record_per_user": False,
                             "model.pinnersage.source": str(tmp_path / "i2v"), "model.pinnersage.ward_threshold": 1.0})
    summary = evaluate_pinnersage(p, str(tmp_path / "ps"))
    for split in ("valid", "test"):
        for key in ("recall@20", "recall@50", "ndcg@50", "hitrate@50"):
            assert 0.0 <= summary[split][key] <= 1.0
        assert 1.0 <= summary[split]["active_interests"] <= 4.0
    assert summary["embeddings"]["kind"] == "item2vec" and summary["embeddings"]["dim"] == 16
    on_disk = json.loads((tmp_path / "ps" / "summary.json").read_text())
    assert on_disk["test"] == summary["test"] and on_disk["best_step"] == 0

    # The workdir is an ordinary one: restore gives the item2vec input table (row 0 = padding = 0).
    run = restore_for_inference(str(tmp_path / "ps"))
    src = restore_for_inference(str(tmp_path / "i2v"))
    x = np.asarray(src.state.params["input_embedding"]["embedding"])
    got = np.asarray(run.state.params["item_embedding"])
    assert run.config.model.embed_dim == 16 and np.array_equal(got[1:], x[1:]) and not got[0].any()
    # Running again re-evaluates the saved checkpoint: same numbers.
    again = evaluate_pinnersage(p, str(tmp_path / "ps"))
    assert again["test"] == summary["test"]


def test_cluster_count_follows_planted_interests(tmp_path):
    """On synthetic data with a topic-centroid table, Ward finds the topics each user watched."""
    from mirecall_jax.data.pipeline import load_dataset
    from mirecall_jax.data.sampler import gather_windows

    c = _config(tmp_path, **{"data.synthetic.noise": 0.0})
    ds = load_dataset(c)
    rng = np.random.default_rng(0)
    num_topics = int(ds.item_topic.max()) + 1
    centroid = rng.normal(size=(num_topics, 16))
    centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
    table = (centroid[np.maximum(ds.item_topic, 0)] + 0.05 * rng.normal(size=(ds.num_items, 16))).astype(np.float32)
    table[0] = 0.0

    users = np.arange(ds.num_users)
    L = c.model.max_len
    batch = gather_windows(ds, users, np.diff(ds.offsets), L)  # each user's last L items
    model = PinnerSage(num_items=ds.num_items, dim=16, num_interests=4, ward_threshold=0.8)
    out = jax.jit(lambda p, b: model.apply({"params": p}, b, method=model.encode_users))(
        {"item_embedding": table}, {"history": batch["history"], "mask": batch["mask"]})
    clusters = np.asarray(out.aux["num_clusters"])
    topics = np.where(batch["mask"], ds.item_topic[batch["history"]], -1)
    seen = np.array([len(set(t[t >= 0])) for t in topics])  # distinct topics in the window
    planted = (ds.user_topics >= 0).sum(1)
    assert np.mean(clusters == seen) > 0.95, np.mean(clusters == seen)
    assert np.corrcoef(clusters, planted)[0, 1] > 0.7, np.corrcoef(clusters, planted)[0, 1]
    assert len(np.unique(planted)) > 1
