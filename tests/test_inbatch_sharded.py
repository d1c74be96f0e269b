"""MoE + global in-batch softmax through the shared step: 8 fake devices == 1 device; streaming logQ."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mirecall_jax.config import base_config
from mirecall_jax.data.dataset import Dataset, EvalSplit
from mirecall_jax.models import build_model
from mirecall_jax.train.loop import device_tables, initial_aux
from mirecall_jax.train.partitioner import Partitioner
from mirecall_jax.train.state import create_state
from mirecall_jax.train.step import make_loss_fn, make_train_step

B, L, T, I = 64, 8, 2, 40


def _dataset():
    empty = EvalSplit(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    rng = np.random.default_rng(0)
    return Dataset(item_ids=np.array([""] + [f"i{i}" for i in range(1, I)]), user_ids=np.array([f"u{u}" for u in range(B)]),
                   uploader_ids=np.array(["", "a", "b"]), tag_ids=np.array(["", "x", "y", "z"]), category_ids=np.array(["c"]),
                   offsets=np.arange(B + 1, dtype=np.int64), items=np.ones(B, np.int32), timestamps=np.zeros(B, np.int64),
                   item_uploader=np.r_[0, rng.integers(1, 3, I - 1)].astype(np.int32),
                   item_tags=np.r_[np.zeros((1, T)), rng.integers(0, 4, (I - 1, T))].astype(np.int32),
                   item_category=np.zeros(I, np.int32), item_count=np.r_[0, rng.integers(1, 50, I - 1)].astype(np.int64),
                   train_users=np.arange(B, dtype=np.int32), train_end=np.ones(B, np.int32), valid=empty, test=empty)


def _config(logq_source="counts"):
    c = base_config()
    c.model.family, c.model.embed_dim, c.model.num_interests, c.model.hidden_dim = "moe", 8, 3, 16
    c.model.use_uploader = c.model.use_tags = True
    c.loss.kind, c.loss.logq_correction, c.loss.logq_source, c.loss.focal_gamma = "in_batch", True, logq_source, 1.0
    c.loss.temperature, c.loss.frequency_buckets = 0.5, 64
    return c


def _batch():
    rng = np.random.default_rng(1)
    history = rng.integers(0, I, (B, L)).astype(np.int32)
    target = rng.integers(1, 6, B).astype(np.int32)  # few distinct targets: many in-batch duplicates
    ds = _dataset()
    return {"user": np.arange(B, dtype=np.int32), "history": history, "history_uploader": ds.item_uploader[history],
            "history_tags": ds.item_tags[history], "mask": history > 0, "target": target,
            "target_uploader": ds.item_uploader[target], "target_tags": ds.item_tags[target]}


def _init(config, ds, batch):
    model = build_model(config.model, ds)
    tx = optax.sgd(0.1)
    state = create_state(model, tx, batch, jax.random.PRNGKey(0), initial_aux(config, ds), device_tables(ds, config.loss))
    return model, tx, state


def test_loss_and_grads_on_8_devices_equal_1_device():
    config, ds, batch = _config(), _dataset(), _batch()
    assert len(set(batch["target"].tolist())) < B  # duplicate masking is exercised
    model, tx, state = _init(config, ds, batch)
    loss_fn = make_loss_fn(model, config)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    rng = jax.random.PRNGKey(3)
    (loss1, _), grads1 = jax.jit(grad_fn)(state.params, state, batch, rng)

    part = Partitioner()  # all 8 fake devices
    assert part.data_size == 8
    sharded_state = jax.device_put(state, part.replicated)
    sharded_batch = part.shard_batch(batch)
    (loss8, _), grads8 = jax.jit(grad_fn)(sharded_state.params, sharded_state, sharded_batch, rng)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5, atol=1e-6)
    for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
        np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-6)


def test_streaming_logq_state_is_updated_inside_the_step():
    config, ds, batch = _config("streaming"), _dataset(), _batch()
    model, tx, state = _init(config, ds, batch)
    step = jax.jit(make_train_step(model, tx, config))
    for t in range(3):
        state, metrics = step(state, batch, jax.random.PRNGKey(t))
    freq = jax.device_get(state.aux["item_frequency"])
    seen = np.unique(batch["target"]) % config.loss.frequency_buckets
    # The same targets every step: last seen at step 2, one step between sightings.
    np.testing.assert_array_equal(freq["last_step"][seen], 2)
    np.testing.assert_allclose(freq["delta"][seen], 1.0)
    assert np.isfinite(float(metrics["loss"])) and "gate_mass/0" in metrics
