"""One process of the 2-process CPU data-parallel check (launched by test_partitioner.py).

Usage: python tests/multihost_worker.py PORT PROCESS_ID  (env: 2 CPU devices per process, gloo).
Each process feeds ITS half of a fixed global batch, runs the partitioned train steps over the
4 global devices and prints one `RESULT {json}` line with the flattened new params. The toy model,
data and step live here (importable without side effects) so the test computes the single-process
reference from the very same code.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

N_PROCESSES = 2
GLOBAL_BATCH = 16
N_STEPS = 2

model = nn.Dense(3)
tx = optax.sgd(0.1)


def global_batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(GLOBAL_BATCH, 5)).astype(np.float32),
        "y": rng.normal(size=(GLOBAL_BATCH, 3)).astype(np.float32),
    }


def init_fn(rng: jax.Array) -> train_state.TrainState:
    params = model.init(rng, jnp.zeros((1, 5), jnp.float32))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def train_step(state: train_state.TrainState, batch: dict, rng: jax.Array):
    # The rng is used so the replicated key input is exercised; threefry is partitionable by
    # default, so its draw does not depend on the mesh.
    scale = 1.0 + 0.1 * jax.random.uniform(rng, ())

    def loss_fn(params):
        pred = state.apply_fn({"params": params}, batch["x"])
        return scale * jnp.mean((pred - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


def run(partitioner, local_batch: dict[str, np.ndarray]) -> np.ndarray:
    """Init, N_STEPS partitioned steps on the same batch; returns the flattened params (host)."""
    state = partitioner.init(init_fn, jax.random.key(0))
    step = partitioner.partition_step(train_step)
    batch = partitioner.shard_batch(local_batch)
    for i in range(N_STEPS):
        state, _ = step(state, batch, jax.random.key(100 + i))
    return np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(state.params)])


def main(port: int, process_id: int) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", 2)
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=N_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    from mirecall_jax.train.partitioner import DataParallelPartitioner

    assert jax.process_count() == N_PROCESSES and jax.device_count() == 4, (jax.process_count(), jax.devices())
    partitioner = DataParallelPartitioner()
    half = GLOBAL_BATCH // N_PROCESSES
    local = {k: v[process_id * half : (process_id + 1) * half] for k, v in global_batch().items()}
    params = run(partitioner, local)
    print("RESULT " + json.dumps({"process": process_id, "params": params.tolist()}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
