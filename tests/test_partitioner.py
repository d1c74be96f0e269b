"""DataParallelPartitioner on 1 and 8 fake CPU devices, plus a real 2-process (gloo) run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

import multihost_worker as mw
from mirecall_jax.train.partitioner import MODEL_AXIS, DataParallelPartitioner, path_str

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def p1() -> DataParallelPartitioner:
    return DataParallelPartitioner(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def p8() -> DataParallelPartitioner:
    assert len(jax.devices()) == 8
    return DataParallelPartitioner()


def test_mesh_layout(p8):
    assert dict(p8.mesh.shape) == {"data": 8, "model": 1}
    assert p8.mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert p8.local_data_shards == 8


@pytest.mark.parametrize("n_dev", [1, 8])
def test_shard_batch(n_dev, p1, p8):
    part = p1 if n_dev == 1 else p8
    local = mw.global_batch()
    batch = part.shard_batch(local)
    for k, v in batch.items():
        assert v.sharding.is_equivalent_to(part.batch_sharding, v.ndim)
        assert v.shape == local[k].shape
        assert {s.data.shape[0] for s in v.addressable_shards} == {16 // n_dev}
        np.testing.assert_array_equal(np.asarray(v), local[k])


def test_indivisible_batch_is_a_clear_error(p8):
    with pytest.raises(ValueError, match=r"local batch size 12 is not divisible by the 8 data shard"):
        p8.shard_batch({"x": np.zeros((12, 5), np.float32)})
    with pytest.raises(ValueError, match="scalar"):
        p8.shard_batch({"x": np.float32(1.0)})


def test_init_places_state_replicated(p8):
    state = p8.init(mw.init_fn, jax.random.key(0))
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_equivalent_to(p8.replicated, leaf.ndim)
    assert jax.tree.structure(p8.state_sharding) == jax.tree.structure(state)


def test_param_rule_row_shards_over_model_axis():
    def rule(path, leaf):
        return PartitionSpec(MODEL_AXIS, None) if path_str(path) == "table" else PartitionSpec()

    part = DataParallelPartitioner(model_axis_size=2, param_rule=rule)
    assert dict(part.mesh.shape) == {"data": 4, "model": 2}
    init = lambda rng: {"table": jax.random.normal(rng, (8, 4)), "bias": jnp.zeros((4,))}
    state = part.init(init, jax.random.key(0))
    assert state["table"].sharding.spec == PartitionSpec(MODEL_AXIS, None)
    assert {s.data.shape for s in state["table"].addressable_shards} == {(4, 4)}
    assert state["bias"].sharding.is_equivalent_to(part.replicated, 1)
    np.testing.assert_array_equal(np.asarray(state["table"]), np.asarray(init(jax.random.key(0))["table"]))


def test_step_matches_single_device(p1, p8):
    ref = mw.run(p1, mw.global_batch())
    got = mw.run(p8, mw.global_batch())
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    init = np.concatenate([np.asarray(l).ravel() for l in jax.tree.leaves(mw.init_fn(jax.random.key(0)).params)])
    assert np.abs(ref - init).max() > 1e-3  # the steps really moved the params


def test_step_donates_old_state(p8):
    state = p8.init(mw.init_fn, jax.random.key(0))
    batch = p8.shard_batch(mw.global_batch())
    old = jax.tree.leaves(state)
    new, metrics = p8.partition_step(mw.train_step)(state, batch, jax.random.key(1))
    assert old and all(x.is_deleted() for x in old)
    assert not any(x.is_deleted() for x in jax.tree.leaves(new))
    assert metrics["loss"].sharding.is_equivalent_to(p8.replicated, 0)
    assert not batch["x"].is_deleted()  # only the state is donated
    # donate_state=False keeps the caller's state alive.
    _ = p8.partition_step(mw.train_step, donate_state=False)(new, batch, jax.random.key(2))
    assert not any(x.is_deleted() for x in jax.tree.leaves(new))


def test_partition_eval_outputs_sharded_on_batch(p8):
    state = p8.init(mw.init_fn, jax.random.key(0))
    batch = p8.shard_batch(mw.global_batch())
    out = p8.partition_eval(lambda s, b: {"pred": s.apply_fn({"params": s.params}, b["x"])})(state, batch)
    assert out["pred"].shape == (16, 3)
    assert out["pred"].sharding.is_equivalent_to(p8.batch_sharding, 2)


def test_step_before_init_is_a_clear_error():
    with pytest.raises(RuntimeError, match="call init"):
        DataParallelPartitioner().partition_step(mw.train_step)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_matches_single_process(p1):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    port = _free_port()
    worker = str(REPO / "tests" / "multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(port), str(i)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
        pytest.fail("multi-host worker hung (> 120 s)")
    finally:
        for p in procs:  # only our own children, by handle
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {i} exited {p.returncode}:\n{out[-4000:]}"
    results = [json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]) for out in outputs]
    assert [r["process"] for r in results] == [0, 1]
    got0, got1 = (np.asarray(r["params"], np.float32) for r in results)
    np.testing.assert_array_equal(got0, got1)  # replicated params: bitwise the same on both hosts
    ref = mw.run(p1, mw.global_batch())
    np.testing.assert_allclose(got0, ref, atol=1e-6, rtol=0)
