"""Run outputs: one JSON object per event in WORKDIR/metrics.jsonl, and TensorBoard event files.

Only process 0 writes, so multi-process runs produce one log.
"""

from __future__ import annotations

import json
import math
import os

import jax


class MetricsLog:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self._fh = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._fh = open(os.path.join(workdir, "metrics.jsonl"), "a")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in values.items()}
        self._fh.write(json.dumps({"step": int(step), "split": split, **clean}, sort_keys=True) + "\n")
        self._fh.flush()
        for k, v in clean.items():
            if isinstance(v, float) and math.isfinite(v):
                # TensorBoard tag names may not contain '@'.
                self._tb.add_scalar(f"{split}/{k.replace('@', '_at_')}", v, step)

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            self._tb.close()
