"""Orbax CheckpointManager with explicit save / preservation policies.

Layout: `<directory>/<step>/{state, meta, metrics}`; 'state' is the TrainState pytree
(StandardSave), 'meta' a small JSON dict ({'step', 'metrics', **extra}), 'metrics' is Orbax's own
copy of the tracked metrics (written because `best_fn` is set), which is what lets the best-N
policy and `best_step()` survive a restart.

Policies (orbax 0.12.8, `orbax.checkpoint.checkpoint_managers`):
- save decision: `AnySavePolicy([FixedIntervalPolicy(save_every), PreemptionCheckpointingPolicy()])`;
  `save(..., force=True)` bypasses it (e.g. the final step, or an eval checkpoint off-interval).
- preservation: `AnyPreservationPolicy([LatestN(keep_latest), BestN(n=keep_best, ...)])`.

Metrics semantics (design): orbax's `BestN` ranks only checkpoints whose recorded metrics are not
None. We hand metrics to the manager only when they contain `best_metric` (i.e. eval
checkpoints); every other checkpoint is recorded with metrics=None and, with
`keep_checkpoints_without_metrics=False`, is governed by LatestN alone (otherwise metric-less
checkpoints would never be deleted). The metrics are always kept in 'meta' regardless.

Atomicity: on a local/POSIX filesystem Orbax writes `<step>.orbax-checkpoint-tmp` and renames it
to `<step>` only after every item is committed (AtomicRenameTemporaryPath); step discovery skips
tmp dirs, so a crashed or in-flight save is never visible as the latest step on disk (a crash's
leftover tmp dir is deleted in the background from construction on, at the latest before the
first save: `cleanup_tmp_directories=True`). On GCS the equivalent is a
commit_success file (CommitFileTemporaryPath), chosen by Orbax automatically.

Async: `save` returns after the device->host copy (all arrays are "prioritized" by default), so
the caller may donate / overwrite the state right away; the disk write and the deletion of
old steps finish in the background. (On the CPU backend that host copy is a zero-copy view, so
a donation right after an async save is skipped by XLA, which copies instead: still correct.) All processes must call save/restore (Orbax syncs them).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

PyTree = Any


def _to_float_dict(metrics: Mapping[str, Any]) -> dict[str, float]:
    """JSON-safe copy: jax/numpy scalars -> Python floats (Orbax writes metrics as JSON)."""
    return {str(k): float(np.asarray(v)) for k, v in metrics.items()}


class Checkpointer:
    """Save / restore a train state with interval saving, latest-N + best-N retention."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep_latest: int = 3,
        save_every: int = 1000,
        best_metric: str = "recall@50",
        best_mode: str = "max",
        keep_best: int = 1,
        async_save: bool = True,
    ) -> None:
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if keep_latest < 1 or save_every < 1 or keep_best < 0:
            raise ValueError("keep_latest and save_every must be >= 1, keep_best >= 0")
        directory = os.fspath(directory)
        if "://" not in directory:  # Orbax wants absolute paths; leave gs:// etc. alone.
            directory = os.path.abspath(directory)
        self.best_metric = best_metric
        worst = -math.inf if best_mode == "max" else math.inf

        def best_fn(m: Mapping[str, Any]) -> float:
            # Only metrics containing best_metric are recorded (see module doc); `worst` covers
            # foreign checkpoints in a reused directory.
            return float(m.get(best_metric, worst))

        options = ocp.CheckpointManagerOptions(
            save_decision_policy=cm.AnySavePolicy(
                [cm.FixedIntervalPolicy(save_every), cm.PreemptionCheckpointingPolicy()]
            ),
            preservation_policy=cm.AnyPreservationPolicy(
                [
                    cm.LatestN(n=keep_latest),
                    cm.BestN(
                        get_metric_fn=best_fn,
                        reverse=(best_mode == "min"),  # BestN keeps the tail of an ascending sort
                        n=keep_best,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            # best_fn/best_mode are not used for deletion (preservation_policy overrides) but make
            # the manager persist metrics to disk and drive `best_step()`.
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._mngr = ocp.CheckpointManager(directory, item_names=("state", "meta"), options=options)

    @property
    def directory(self) -> str:
        return os.fspath(self._mngr.directory)

    def save(
        self,
        step: int,
        state: PyTree,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> bool:
        """Save `state` at `step` if the interval policy (or `force`) says so; True if saved.

        `metrics` rank the checkpoint for best-N only if they contain `best_metric`. `meta` is extra
        small JSON stored with it. Steps only move forward: a step <= the latest one is not saved
        (returns False, even with `force`), so an existing checkpoint is never overwritten.
        """
        step = int(step)
        latest = self._mngr.latest_step()
        if latest is not None and step <= latest:
            return False
        metrics = _to_float_dict(metrics or {})
        tracked = metrics if self.best_metric in metrics else None
        meta_doc = {**dict(meta or {}), "step": step, "metrics": metrics}
        return bool(
            self._mngr.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta_doc)),
                metrics=tracked,
                force=force,
            )
        )

    def restore(self, step: int | None, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """Restore (state, meta) of `step` (None: latest) into the shardings of `abstract_state`.

        `abstract_state`: pytree of jax.ShapeDtypeStruct with `.sharding` set (e.g.
        `DataParallelPartitioner.abstract_state(init_fn, ...)`), or of arrays whose sharding is used.
        """
        for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state):
            if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
                raise ValueError(
                    f"abstract_state leaf {jax.tree_util.keystr(path)} has no sharding; "
                    "build it with DataParallelPartitioner.abstract_state()"
                )
        self.wait_until_finished()  # an in-flight async save of `step` must be committed first
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        out = self._mngr.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        return out.state, dict(out.meta)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """Step with the best `best_metric` among kept checkpoints; None if none was evaluated."""
        return self._mngr.best_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def metrics(self, step: int) -> dict | None:
        """The tracked metrics Orbax recorded for `step` (None for non-eval checkpoints)."""
        return self._mngr.metrics(int(step))

    def wait_until_finished(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Finish pending async saves / deletions and release the manager."""
        self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
