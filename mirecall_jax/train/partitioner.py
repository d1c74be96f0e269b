"""Mesh + shardings in one object, modelled on RecML's small `Partitioner`.

Design:
- One 2-D mesh with axes ('data', 'model') over all global devices. 'model' has size 1 by default
  (pure data parallelism); it is there so embedding tables can later be row-sharded over it.
- Batches: the leading (batch) dim is split over 'data', trailing dims replicated. Every process
  feeds only ITS slice through `jax.make_array_from_process_local_data`; the global batch is the
  concatenation of the process slices in process order (the mesh is built process-major for that).
- State: shardings come from the abstract state (`jax.eval_shape`) through a per-leaf rule
  `param_rule(path, leaf) -> PartitionSpec`, default `P()` (replicated). Row-sharding a table is a
  rule change only; init / step / eval / checkpoint restore all read the same sharding tree.
- init, step and eval are plain `jax.jit` with explicit in/out shardings: no `with mesh:` context,
  no pmap. XLA (GSPMD/Shardy) inserts the cross-device gradient reduction from those shardings.
- The train step donates its input state, so params / optimizer state are updated in place.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

PyTree = Any
# (key path, leaf with .shape/.dtype) -> PartitionSpec over the mesh axes.
ParamRule = Callable[[tuple, Any], PartitionSpec]

DATA_AXIS = "data"
MODEL_AXIS = "model"


def replicate_all(path: tuple, leaf: Any) -> PartitionSpec:
    """Default rule: every state leaf fully replicated (pure data parallelism)."""
    del path, leaf
    return PartitionSpec()


def path_str(path: tuple) -> str:
    """'params/tower/embed/embedding'-style name of a key path, for writing rules."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


class DataParallelPartitioner:
    """Builds the ('data', 'model') mesh and partitions init / train step / eval over it."""

    def __init__(
        self,
        devices: Sequence[jax.Device] | None = None,
        model_axis_size: int = 1,
        param_rule: ParamRule | None = None,
    ) -> None:
        devices = list(devices) if devices is not None else list(jax.devices())
        if not devices:
            raise ValueError("DataParallelPartitioner: no devices given")
        if model_axis_size < 1 or len(devices) % model_axis_size:
            raise ValueError(f"model_axis_size={model_axis_size} must divide the device count {len(devices)}")
        # Process-major device order: the 'data' rows owned by process p are contiguous and precede
        # those of p+1, so the global batch is the process slices concatenated in process order, and
        # a 'model' group stays inside one host when it can. `jax.make_mesh` may reorder devices for
        # the physical topology (which buys nothing for data parallelism) and, in current JAX,
        # defaults to Explicit axes, so we build the Mesh directly.
        devices.sort(key=lambda d: (d.process_index, d.id))
        grid = np.empty(len(devices), dtype=object)
        grid[:] = devices
        grid = grid.reshape(len(devices) // model_axis_size, model_axis_size)
        # Auto axis types: shardings are given only at the jit boundary (batch, state, metrics) and
        # the compiler propagates them through the model. Explicit axes would make sharding part of
        # every intermediate's type, forcing annotations on ambiguous ops (gathers from tables,
        # einsums contracting a sharded dim) throughout model code, for no benefit to a DP step.
        self.mesh = Mesh(grid, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.param_rule: ParamRule = param_rule or replicate_all
        # Sharding tree of the train state; set by `state_shardings` (hence by `init`/`abstract_state`).
        self.state_sharding: PyTree | None = None
        me = jax.process_index()
        # Distinct batch shards this process must feed = 'data' rows holding one of its devices.
        self.local_data_shards = int(sum(any(d.process_index == me for d in row) for row in grid))

    @property
    def data_size(self) -> int:
        return self.mesh.shape[DATA_AXIS]

    # ---------------------------------------------------------------- batch
    def shard_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Process-local host batch -> global jax.Arrays sharded on the leading dim over 'data'."""
        n = self.local_data_shards
        if n == 0:
            raise ValueError(f"process {jax.process_index()} owns no device of this partitioner's mesh")
        out: dict[str, jax.Array] = {}
        for name, x in local_batch.items():
            x = np.asarray(x)
            if x.ndim == 0 or x.shape[0] % n:
                raise ValueError(
                    f"batch[{name!r}]: local batch size {x.shape[0] if x.ndim else '(scalar)'} is not divisible "
                    f"by the {n} data shard(s) on process {jax.process_index()} (data axis size "
                    f"{self.data_size}); pick a per-process batch size that is a multiple of {n}, or pad"
                )
            out[name] = jax.make_array_from_process_local_data(self.batch_sharding, x)
        return out

    # ---------------------------------------------------------------- state
    def state_shardings(self, abstract_state: PyTree) -> PyTree:
        """NamedSharding per state leaf from `param_rule`; also stored as `self.state_sharding`."""
        self.state_sharding = jax.tree_util.tree_map_with_path(
            lambda path, leaf: NamedSharding(self.mesh, self.param_rule(path, leaf)), abstract_state
        )
        return self.state_sharding

    def abstract_state(self, init_fn: Callable[..., PyTree], *args: Any) -> PyTree:
        """ShapeDtypeStructs of `init_fn(*args)` carrying their shardings (a checkpoint restore target).

        `args` must be pytrees of arrays (bind modules / optimizers with functools.partial).
        """
        shapes = jax.eval_shape(init_fn, *args)
        shardings = self.state_shardings(shapes)
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)

    def init(self, init_fn: Callable[..., PyTree], *args: Any) -> PyTree:
        """Run `init_fn(*args)` under jit so each leaf is created directly in its sharding."""
        self.abstract_state(init_fn, *args)
        return jax.jit(init_fn, out_shardings=self.state_sharding)(*args)

    def _require_state_sharding(self) -> PyTree:
        if self.state_sharding is None:
            raise RuntimeError("state shardings unknown: call init(), abstract_state() or state_shardings() first")
        return self.state_sharding

    # ---------------------------------------------------------------- compiled fns
    def partition_step(
        self, step_fn: Callable[[PyTree, dict, jax.Array], tuple[PyTree, PyTree]], donate_state: bool = True
    ) -> Callable[[PyTree, dict, jax.Array], tuple[PyTree, PyTree]]:
        """jit `step_fn(state, batch, rng) -> (state, metrics)`; metrics come back replicated.

        With `donate_state` the input state's buffers are reused for the output: the caller must
        not touch the old state afterwards (its arrays report `is_deleted()`).
        """
        state_sh = self._require_state_sharding()
        return jax.jit(
            step_fn,
            in_shardings=(state_sh, self.batch_sharding, self.replicated),
            out_shardings=(state_sh, self.replicated),
            donate_argnums=(0,) if donate_state else (),
        )

    def partition_eval(self, fn: Callable[[PyTree, dict], PyTree]) -> Callable[[PyTree, dict], PyTree]:
        """jit `fn(state, batch) -> outputs`; every output leaf sharded on its leading dim over 'data'."""
        return jax.jit(
            fn,
            in_shardings=(self._require_state_sharding(), self.batch_sharding),
            out_shardings=self.batch_sharding,
        )


# RecML-style short name.
Partitioner = DataParallelPartitioner
