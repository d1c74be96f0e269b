"""Train state and optimizer construction."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree (the thing Orbax saves).

    `aux` holds non-trainable state updated inside the step (activation records, streaming item
    frequencies, ...); `tables` holds constant lookup arrays the step needs on device (item side
    tables, the negative-sampling distribution) so they are sharded and checkpointed like the rest.
    """

    step: jax.Array  # [] int32
    params: Any
    opt_state: Any
    aux: dict
    tables: dict


OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr),
    "adamw": lambda lr, c: optax.adamw(lr, weight_decay=c.weight_decay),
    "adagrad": lambda lr, c: optax.adagrad(lr),
}


def make_schedule(train_cfg) -> optax.Schedule:
    """Linear warmup to learning_rate, then constant or cosine decay to 0 at max_steps."""
    warm = max(int(train_cfg.warmup_steps), 0)
    lr = train_cfg.learning_rate
    if train_cfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif train_cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(int(train_cfg.max_steps) - warm, 1))
    else:
        raise ValueError(f"config.train.schedule: expected 'constant' or 'cosine', got {train_cfg.schedule!r}")
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    if train_cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer: expected one of {sorted(OPTIMIZERS)}, got {train_cfg.optimizer!r}")
    opt = OPTIMIZERS[train_cfg.optimizer](make_schedule(train_cfg), train_cfg)
    if train_cfg.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip_norm), opt)
    return opt


def create_state(model, tx, example_batch: dict, rng: jax.Array, aux: dict, tables: dict) -> TrainState:
    """Pure init (run under jit with out_shardings by the partitioner)."""
    params = model.init({"params": rng, "dropout": rng}, example_batch, train=False)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), aux=aux, tables=tables)
