"""Fixed-shape batches: purity in (seed, step, process), right-aligned windows, eval coverage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mirecall_jax.data.dataset import Dataset, EvalSplit
from mirecall_jax.data.sampler import TrainSampler, eval_batches, gather_windows

L, T = 6, 3


def make_dataset(seed: int = 0, num_users: int = 40, num_items: int = 30) -> Dataset:
    """A small, fully consistent Dataset: short and long sequences, 28 train / 6 valid / 6 test users."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 20, size=num_users)
    lengths[:6] = [2, 3, 5, L + 7, 12, 9]  # cut lower bound min(4, end-1) and windows longer than L
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    items = rng.integers(1, num_items, size=n).astype(np.int32)  # 0 is padding
    timestamps = (1000 + np.arange(n) * 7).astype(np.int64)  # strictly increasing within every user
    num_uploaders, num_tags = 8, 12
    item_uploader = rng.integers(1, num_uploaders, size=num_items).astype(np.int32)
    item_tags = rng.integers(1, num_tags, size=(num_items, T)).astype(np.int32)
    item_tags[rng.random((num_items, T)) < 0.3] = 0  # some items have fewer tags
    item_uploader[0], item_tags[0] = 0, 0  # padding item
    item_category = rng.integers(0, 5, size=num_items).astype(np.int32)
    item_category[0] = -1
    users = np.arange(num_users, dtype=np.int32)
    train_users, valid_users, test_users = users[:28], users[28:34], users[34:]
    train_end = np.zeros(num_users, np.int32)
    train_end[train_users] = lengths[train_users]
    train_end[5] = lengths[5] - 1  # a train prefix shorter than the sequence must be respected

    def split(us: np.ndarray) -> EvalSplit:
        hist = np.maximum(1, (lengths[us] * 0.8).astype(np.int32))
        return EvalSplit(users=us, history_end=hist.astype(np.int32), target_end=lengths[us].astype(np.int32))

    pos = np.arange(n) - np.repeat(offsets[:-1], lengths)
    return Dataset(
        item_ids=np.array([""] + [f"v{i}" for i in range(1, num_items)]),
        user_ids=np.array([f"u{i}" for i in range(num_users)]),
        uploader_ids=np.array([""] + [f"up{i}" for i in range(1, num_uploaders)]),
        tag_ids=np.array([""] + [f"tag{i}" for i in range(1, num_tags)]),
        category_ids=np.array([f"c{i}" for i in range(5)]),
        offsets=offsets, items=items, timestamps=timestamps,
        item_uploader=item_uploader, item_tags=item_tags, item_category=item_category,
        item_count=np.bincount(items[pos < np.repeat(train_end, lengths)], minlength=num_items).astype(np.int64),
        train_users=train_users, train_end=train_end, valid=split(valid_users), test=split(test_users))


def reference_window(ds: Dataset, u: int, end: int) -> tuple[list[int], list[int]]:
    """The plain-Python window: last L items of seq[:end], left-padded with 0, and their times."""
    seq, ts = list(ds.sequence(u)[:end]), list(ds.timestamps[ds.offsets[u]: ds.offsets[u] + end])
    seq, ts = seq[-L:], ts[-L:]
    return [0] * (L - len(seq)) + seq, [0] * (L - len(ts)) + ts


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return make_dataset()


def test_batch_is_a_pure_function_of_seed_and_step(ds):
    a = TrainSampler(ds, 16, L, seed=3, with_timestamps=True)
    b = TrainSampler(ds, 16, L, seed=3, with_timestamps=True)
    b.batch(99)  # calling other steps first must not matter: there is no iterator state
    x, y = a.batch(5), b.batch(5)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(a.batch(6)["target"], x["target"]) or not np.array_equal(a.batch(6)["user"], x["user"])
    assert not np.array_equal(TrainSampler(ds, 16, L, seed=4).batch(5)["user"], x["user"])


def test_keys_shapes_dtypes(ds):
    b = TrainSampler(ds, 8, L, seed=0).batch(0)
    expect = {"user": ((8,), np.int32), "history": ((8, L), np.int32), "history_uploader": ((8, L), np.int32),
              "history_tags": ((8, L, T), np.int32), "mask": ((8, L), np.bool_), "target": ((8,), np.int32),
              "target_uploader": ((8,), np.int32), "target_tags": ((8, T), np.int32)}
    assert set(b) == set(expect)
    for k, (shape, dtype) in expect.items():
        assert b[k].shape == shape and b[k].dtype == dtype, k
    bt = TrainSampler(ds, 8, L, seed=0, with_timestamps=True).batch(0)
    assert set(bt) == set(expect) | {"history_time", "target_time"}
    assert bt["history_time"].dtype == np.int64 and bt["target_time"].shape == (8,)


@pytest.mark.parametrize("processes", [2, 4])
def test_process_slices_concatenate_to_the_global_batch(ds, processes):
    full = TrainSampler(ds, 16, L, seed=1, with_timestamps=True).batch(7)
    parts = [TrainSampler(ds, 16, L, seed=1, process_index=p, process_count=processes, with_timestamps=True).batch(7)
             for p in range(processes)]
    for k in full:
        assert parts[0][k].shape[0] == 16 // processes
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), full[k])


def test_bad_process_arguments_raise(ds):
    with pytest.raises(ValueError, match="divisible"):
        TrainSampler(ds, 10, L, seed=0, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        TrainSampler(ds, 8, L, seed=0, process_index=2, process_count=2)


def test_windows_targets_and_cut_points_match_python(ds):
    s = TrainSampler(ds, 64, L, seed=11, with_timestamps=True)
    for step in range(20):
        b = s.batch(step)
        users, cuts = s.examples(step)
        np.testing.assert_array_equal(b["user"], users)
        for i, (u, c) in enumerate(zip(users, cuts)):
            end = ds.train_end[u]
            assert u in ds.train_users and min(4, end - 1) <= c <= end - 1
            hist, times = reference_window(ds, u, c)
            np.testing.assert_array_equal(b["history"][i], hist)
            np.testing.assert_array_equal(b["history_time"][i], times)
            np.testing.assert_array_equal(b["mask"][i], np.array(hist) != 0)
            np.testing.assert_array_equal(b["history_uploader"][i], ds.item_uploader[hist])
            np.testing.assert_array_equal(b["history_tags"][i], ds.item_tags[hist])
            assert b["target"][i] == ds.sequence(u)[c] != 0
            assert b["target_time"][i] == ds.timestamps[ds.offsets[u] + c]
            assert b["target_uploader"][i] == ds.item_uploader[b["target"][i]]
            np.testing.assert_array_equal(b["target_tags"][i], ds.item_tags[b["target"][i]])
        assert b["mask"].any(axis=1).all(), "every training example has a non-empty history"


def test_cut_points_cover_their_range_and_users_are_uniform(ds):
    s = TrainSampler(ds, 256, L, seed=0)
    users, cuts = map(np.concatenate, zip(*(s.examples(t) for t in range(40))))
    assert set(users) == set(ds.train_users.tolist())  # every train user drawn, nobody else
    counts = np.bincount(users, minlength=ds.num_users)[ds.train_users]
    assert counts.min() > 0.6 * counts.mean()
    for u in (0, 1, 2, 3, 5):  # short sequences: cut in [min(4, end-1), end-1], every value reached
        end = int(ds.train_end[u])
        assert set(cuts[users == u].tolist()) == set(range(min(4, end - 1), end))


def test_gather_windows_padding_and_truncation(ds):
    u = np.array([3, 3, 3, 0])
    ends = np.array([0, 2, L + 7, 2])  # empty, short, longer than L
    w = gather_windows(ds, u, ends, L)
    assert not w["mask"][0].any() and (w["history"][0] == 0).all() and (w["history_tags"][0] == 0).all()
    assert (w["history_time"][0] == 0).all() and (w["history_uploader"][0] == 0).all()
    for i in range(4):
        hist, times = reference_window(ds, u[i], ends[i])
        np.testing.assert_array_equal(w["history"][i], hist)
        np.testing.assert_array_equal(w["history_time"][i], times)
    assert w["history"][2, -1] == ds.sequence(3)[L + 6]  # most recent item at position L-1


@pytest.mark.parametrize("name", ["valid", "test"])
@pytest.mark.parametrize("batch_size", [4, 6, 32])
def test_eval_batches_cover_each_user_once_with_true_targets(ds, name, batch_size):
    split = ds.eval_split(name)
    max_targets = int((split.target_end - split.history_end).max())
    seen = []
    for b in eval_batches(ds, name, L, batch_size):
        assert b["user"].shape == (batch_size,) and b["valid"].shape == (batch_size,)
        assert b["targets"].shape == (batch_size, max_targets) and b["history"].shape == (batch_size, L)
        assert "history_time" not in b
        assert b["valid"][:1].all() and (np.diff(b["valid"].astype(int)) <= 0).all()  # padding at the end
        for i in range(batch_size):
            u = b["user"][i]
            j = int(np.flatnonzero(split.users == u)[0])
            h, t = split.history_end[j], split.target_end[j]
            hist, _ = reference_window(ds, u, h)
            np.testing.assert_array_equal(b["history"][i], hist)
            np.testing.assert_array_equal(b["mask"][i], np.array(hist) != 0)
            want = ds.sequence(u)[h:t]
            np.testing.assert_array_equal(b["targets"][i, : len(want)], want)
            assert (b["targets"][i, len(want):] == 0).all()
            np.testing.assert_array_equal(b["targets_mask"][i], np.arange(max_targets) < len(want))
            if b["valid"][i]:
                seen.append(u)
    assert sorted(seen) == sorted(split.users.tolist())


def test_eval_batches_timestamps_and_bad_split(ds):
    b = next(eval_batches(ds, "valid", L, 4, with_timestamps=True))
    u, h = b["user"][0], ds.valid.history_end[0]
    np.testing.assert_array_equal(b["history_time"][0], reference_window(ds, u, h)[1])
    with pytest.raises(ValueError):
        next(eval_batches(ds, "train", L, 4))


def test_users_without_a_usable_prefix_are_never_drawn(ds):
    train_end = ds.train_end.copy()
    train_end[[0, 4]] = 1  # one item: nothing to predict it from
    s = TrainSampler(dataclasses.replace(ds, train_end=train_end), 128, L, seed=0)
    users = np.concatenate([s.examples(t)[0] for t in range(10)])
    assert not np.isin(users, [0, 4]).any() and np.isin([1, 3], users).all()
    train_end[:] = 1
    with pytest.raises(ValueError, match="train_end"):
        TrainSampler(dataclasses.replace(ds, train_end=train_end), 8, L, seed=0)
