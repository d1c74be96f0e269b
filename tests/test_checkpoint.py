"""Checkpointer against real Orbax on the 8 fake CPU devices: policies, sharded restore, async."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multihost_worker as mw
from mirecall_jax.train.checkpoint import Checkpointer
from mirecall_jax.train.partitioner import DataParallelPartitioner


@pytest.fixture(scope="module")
def p1() -> DataParallelPartitioner:
    return DataParallelPartitioner(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def p8() -> DataParallelPartitioner:
    return DataParallelPartitioner()


def _state(p, seed: int = 0):
    return p.init(mw.init_fn, jax.random.key(seed))


def _assert_bitwise_equal(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_preserves_latest_n_plus_best(tmp_path, p1):
    state = _state(p1)
    recall = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.4, 6: 0.5}
    with Checkpointer(tmp_path, keep_latest=2, save_every=1, async_save=False) as ck:
        for step, r in recall.items():
            assert ck.save(step, state, metrics={"recall@50": jnp.float32(r), "loss": 1.0})
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 5, 6]  # latest 2 + best (step 2)
        assert ck.best_step() == 2 and ck.latest_step() == 6
        # Metric-less (non-eval) checkpoints are retained by LatestN only, never piled up.
        assert ck.save(7, state, metrics={"loss": 0.5})
        assert ck.save(8, state)
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 7, 8]
        assert ck.metrics(7) is None and ck.metrics(2) == pytest.approx({"recall@50": 0.9, "loss": 1.0})
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [2, 7, 8]
    # A fresh manager re-reads the persisted metrics: best step survives a restart.
    with Checkpointer(tmp_path, keep_latest=2, save_every=1) as ck:
        assert ck.all_steps() == [2, 7, 8] and ck.best_step() == 2 and ck.latest_step() == 8


def test_best_mode_min(tmp_path, p1):
    state = _state(p1)
    with Checkpointer(tmp_path, keep_latest=1, save_every=1, best_metric="loss", best_mode="min") as ck:
        for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
            ck.save(step, state, metrics={"loss": loss})
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 4] and ck.best_step() == 2


def test_save_decision_interval_and_force(tmp_path, p1):
    state = _state(p1)
    with Checkpointer(tmp_path, keep_latest=10, save_every=5, async_save=False) as ck:
        saved = {s: ck.save(s, state) for s in range(1, 12)}
        assert [s for s, ok in saved.items() if ok] == [5, 10]
        assert ck.save(12, state, force=True)
        assert not ck.save(12, state, force=True)  # never overwrites an existing step
        assert not ck.save(11, state, force=True)  # nor goes back in time
        assert ck.all_steps() == [5, 10, 12]


def test_restore_single_device_checkpoint_into_8_device_sharding(tmp_path, p1, p8):
    state1 = _state(p1, seed=3)
    assert len(jax.tree.leaves(state1)[0].sharding.device_set) == 1
    with Checkpointer(tmp_path, save_every=1) as ck:
        ck.save(1, state1, metrics={"recall@50": 0.5}, meta={"data_cursor": 1234})
    with Checkpointer(tmp_path, save_every=1) as ck:
        target = p8.abstract_state(mw.init_fn, jax.random.key(0))
        restored, meta = ck.restore(None, target)
    _assert_bitwise_equal(restored, state1)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.is_equivalent_to(p8.replicated, leaf.ndim)
        assert len(leaf.sharding.device_set) == 8
    assert meta == {"step": 1, "metrics": {"recall@50": 0.5}, "data_cursor": 1234}
    # Restored state keeps its static fields and trains under the 8-device step.
    step = p8.partition_step(mw.train_step)
    new, _ = step(restored, p8.shard_batch(mw.global_batch()), jax.random.key(1))
    assert int(new.step) == 1


def test_restore_requires_shardings(tmp_path, p1):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ck:
        ck.save(1, _state(p1))
        with pytest.raises(ValueError, match="has no sharding"):
            ck.restore(1, jax.eval_shape(mw.init_fn, jax.random.key(0)))
        with pytest.raises(FileNotFoundError):
            Checkpointer(tmp_path / "empty").restore(None, _state(p1))


def test_async_save_then_close_loses_nothing_even_if_state_is_donated(tmp_path, p8):
    state = _state(p8, seed=7)
    expected = jax.tree.map(lambda x: np.array(x, copy=True), state)  # a view would pin the buffers
    batch = p8.shard_batch(mw.global_batch())
    step = p8.partition_step(mw.train_step)
    ck = Checkpointer(tmp_path, save_every=1, async_save=True)
    assert ck.save(1, state)
    # Donate `state` while its write may still be in flight. On GPU/TPU Orbax already holds a host
    # copy; on CPU its host "copy" is a zero-copy view, so XLA skips the donation (copies) instead.
    # Either way the checkpoint must hold the pre-step values.
    new, _ = step(state, batch, jax.random.key(0))
    assert ck.save(2, new)
    ck.close()
    with Checkpointer(tmp_path, save_every=1) as ck2:
        assert ck2.all_steps() == [1, 2]
        restored, _ = ck2.restore(1, p8.abstract_state(mw.init_fn, jax.random.key(0)))
        _assert_bitwise_equal(restored, expected)
        restored2, meta2 = ck2.restore(2, p8.abstract_state(mw.init_fn, jax.random.key(0)))
        _assert_bitwise_equal(restored2, new)
        assert meta2["step"] == 2


def test_partial_save_is_never_visible(tmp_path, p1):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ck:
        ck.save(1, _state(p1))
    # What a crash mid-save leaves behind: the un-renamed tmp dir of step 9.
    partial = tmp_path / "9.orbax-checkpoint-tmp"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\0" * 10)
    with Checkpointer(tmp_path, save_every=1) as ck:
        assert ck.latest_step() == 1 and ck.all_steps() == [1]
        # cleanup_tmp_directories starts at construction and is awaited by the next save.
        assert ck.save(10, _state(p1))
    assert not partial.exists()
