"""Preprocessing: dedupe, k-core, vocabularies, CSR order, side tables, splits, cache."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from mirecall_jax.config import base_config
from mirecall_jax.data.events import DataError, EventLog, ItemTable
from mirecall_jax.data.pipeline import k_core, load_dataset, preprocess
from mirecall_jax.data.vocab import build_vocab, lookup

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _log(rows, items=None):
    u, i, t = zip(*rows)
    return EventLog(np.array(u), np.array(i), np.array(t, np.int64), items=items)


def _cfg(**data):
    c = base_config()
    c.data.min_item_count = 0
    c.data.min_user_count = 0
    for k, v in data.items():
        c.data[k] = v
    return c


def test_vocab_roundtrip_and_unknown():
    vocab, idx = build_vocab(np.array(["b", "007", "a", "b"]))
    assert vocab[0] == "" and list(vocab[1:]) == ["007", "a", "b"]
    assert list(vocab[idx]) == ["b", "007", "a", "b"]
    assert list(lookup(vocab, np.array(["a", "zz", "007"]))) == [2, 0, 1]


def test_k_core_items_then_users():
    user = np.array(["u1"] * 3 + ["u2"] * 2 + ["u3"])
    item = np.array(["a", "b", "c", "a", "b", "a"])
    keep, catalogue = k_core(user, item, min_item=2, min_user=2)
    # c has 1 row -> dropped; u3 then has 1 row (a) -> dropped; u1 keeps a, b; u2 keeps a, b.
    assert keep.tolist() == [True, True, False, True, True, False]
    assert catalogue.tolist() == ["a", "b"]


def test_sequences_are_time_ordered_with_stable_ties_and_duplicates_dropped():
    rows = [("u", "x", 5), ("u", "y", 1), ("u", "z", 5), ("u", "x", 5), ("v", "y", 2), ("v", "x", 2)]
    ds = preprocess(_log(rows), _cfg(split="leave_last_out").data, seed=0)
    u = int(np.flatnonzero(ds.user_ids == "u")[0])
    # y (t=1) first; x and z tie at t=5 and keep file order; the duplicate (u, x, 5) is dropped.
    assert ds.item_ids[ds.sequence(u)].tolist() == ["y", "x", "z"]
    assert ds.stats["duplicate_rows_dropped"] == 1
    assert ds.offsets.tolist() == [0, 3, 5]


def test_side_tables_follow_item_vocabulary():
    table = ItemTable(item=np.array(["x", "y", "gone"]), uploader=np.array(["up1", "", "up2"]),
                      tag_offsets=np.array([0, 3, 4, 5]), tags=np.array(["t1", "t2", "t3", "t2", "t9"]),
                      category=np.array(["c1", "c2", "c1"]))
    ds = preprocess(_log([("u", "x", 1), ("u", "y", 2)], table), _cfg(max_tags=2).data, seed=0)
    x, y = lookup(ds.item_ids, np.array(["x", "y"]))
    assert ds.uploader_ids[ds.item_uploader[x]] == "up1" and ds.item_uploader[y] == 0
    assert ds.tag_ids[ds.item_tags[x]].tolist() == ["t1", "t2"]  # cut to max_tags
    assert ds.tag_ids[ds.item_tags[y]].tolist() == ["t2", ""]
    assert ds.category_ids[ds.item_category[[x, y]]].tolist() == ["c1", "c2"]
    assert ds.item_uploader[0] == 0 and (ds.item_tags[0] == 0).all() and ds.item_category[0] == -1


def _random_log(num_users=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        for t in range(rng.integers(5, 30)):
            rows.append((f"u{u}", f"i{rng.integers(0, 300)}", t))
    return _log(rows)


def test_comirec_split_invariants():
    cfg = _cfg()
    ds = preprocess(_random_log(), cfg.data, seed=3)
    train, valid, test = set(ds.train_users), set(ds.valid.users), set(ds.test.users)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train | valid | test) == ds.num_users
    assert abs(len(train) - 0.8 * ds.num_users) <= 1 and abs(len(valid) - 0.1 * ds.num_users) <= 1
    n = ds.lengths()[ds.test.users]
    assert (ds.test.history_end == (n * 0.8).astype(int)).all() and (ds.test.target_end == n).all()
    assert (ds.train_end[list(valid | test)] == 0).all()
    # Seeded: the same seed gives the same split, another seed a different one.
    again = preprocess(_random_log(), cfg.data, seed=3)
    other = preprocess(_random_log(), cfg.data, seed=4)
    assert np.array_equal(again.train_users, ds.train_users)
    assert not np.array_equal(other.train_users, ds.train_users)
    # item_count only counts training positions.
    assert ds.item_count.sum() == ds.train_end.sum()


def test_leave_last_out_split():
    ds = preprocess(_random_log(50), _cfg(split="leave_last_out").data, seed=0)
    n = ds.lengths()
    assert (ds.train_end == n - 2).all()
    assert (ds.valid.target_end - ds.valid.history_end == 1).all()
    assert (ds.test.history_end == n - 1).all() and (ds.test.target_end == n).all()


def test_unknown_split_and_empty_result_are_errors():
    with pytest.raises(DataError, match="config.data.split"):
        preprocess(_random_log(20), _cfg(split="random").data, seed=0)
    with pytest.raises(DataError, match="no interactions left"):
        preprocess(_random_log(20), _cfg(min_item_count=10_000).data, seed=0)


def test_synthetic_dataset_keeps_ground_truth_aligned(tmp_path):
    c = base_config()
    c.data.cache_dir = str(tmp_path)
    s = c.data.synthetic
    s.num_users, s.num_items, s.num_uploaders, s.num_tags = 300, 1500, 100, 100
    ds = load_dataset(c)
    assert ds.item_topic[0] == -1 and (ds.item_topic[1:] >= 0).all()
    # The category of a synthetic video is its topic "t{topic}".
    assert (ds.category_ids[ds.item_category[1:]] == np.char.add("t", ds.item_topic[1:].astype(str))).all()
    assert ds.user_topics.shape == (ds.num_users, s.max_interests)
    on_topic = [np.isin(ds.item_topic[ds.sequence(u)], ds.user_topics[u]).mean() for u in range(ds.num_users)]
    assert np.mean(on_topic) > 0.85


def test_movietweetings_counts_and_cache(tmp_path):
    path = SHARED / "movietweetings-100k"
    if not (path / "ratings.dat").exists():
        pytest.skip(f"{path} not present (real-data test)")
    c = base_config()
    c.data.format, c.data.path, c.data.cache_dir = "movietweetings", str(path), str(tmp_path)
    cold = load_dataset(c)
    assert (cold.stats["raw_rows"], cold.stats["raw_users"], cold.stats["raw_items"]) == (100_000, 16_554, 10_506)
    assert (cold.stats["rows"], cold.stats["users"], cold.stats["items"]) == (69_299, 4_373, 2_727)
    assert cold.stats["cached"] is False and "0104257" in set(cold.item_ids)
    t0 = time.perf_counter()
    warm = load_dataset(c)
    assert time.perf_counter() - t0 < 1.0 and warm.stats["cached"] is True
    assert np.array_equal(warm.items, cold.items) and np.array_equal(warm.item_ids, cold.item_ids)
    # A different preprocessing config is a different cache entry.
    c.data.min_user_count = 10
    assert load_dataset(c).stats["cached"] is False and len(os.listdir(tmp_path)) == 2
