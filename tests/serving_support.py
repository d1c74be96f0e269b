"""Shared fixtures' work for the serving tests: one tiny trained workdir and its artifact per session.

The serving test modules all need a trained checkpoint and an exported artifact; training even a
tiny model costs ~15 s of compilation, so it is done once per pytest session under the session's
base temp directory and reused by every module (`trained_workdir`, `exported_artifact`). Both run
the command-line programs (train.py, serve_export.py), so the whole user path is exercised.
The model: single-activation transformer, K = 4, uploader + tag side features, dynamic-capacity
pruning on (prune_threshold 0.2), so the export path with the most moving parts is the one tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train_loop import TINY

ROOT = Path(__file__).resolve().parents[1]
SERVING_OVERRIDES = {
    "model.family": "single_activation", "model.num_interests": 4, "model.use_uploader": True,
    "model.use_tags": True, "model.num_layers": 1, "model.prune_threshold": 0.2, "model.prune_min_count": 5,
    "train.max_steps": 40, "train.eval_every": 20, "train.learning_rate": 5e-3,
}


def tiny_config(cache_dir: Path, **extra):
    from mirecall_jax.config import base_config, override

    c = base_config()
    c.data.cache_dir = str(cache_dir)
    return override(c, {**TINY, **extra})


def trained_workdir(base: Path) -> Path:
    """A tiny single-activation workdir under `base`, trained on first use by train.py in a subprocess
    (one CPU device there: compiles faster than under the test session's 8 fake devices)."""
    workdir = base / "serving_workdir"
    if not (workdir / "summary.json").exists():
        over = {**TINY, **SERVING_OVERRIDES, "data.cache_dir": str(base / "cache")}
        args = [sys.executable, str(ROOT / "train.py"), "--config",
                str(ROOT / "configs/single_activation_synthetic.py"), "--workdir", str(workdir)]
        args += [f"--config.{k}={v}" for k, v in over.items()]
        proc = subprocess.run(args, env=subprocess_env(base), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def subprocess_env(base: Path) -> dict:
    env = dict(os.environ, MIRECALL_CACHE=str(base / "cache"), PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process would have
    return env


def exported_artifact(base: Path) -> Path:
    """The workdir's best checkpoint exported by the serve_export.py CLI (run once, in a subprocess)."""
    out = base / "serving_artifact"
    if not (out / "manifest.json").exists():
        workdir = trained_workdir(base)
        proc = subprocess.run([sys.executable, str(ROOT / "serve_export.py"), "--workdir", str(workdir),
                               "--out", str(out), "--checkpoint", "best", "--export.recall_max_queries=400"],
                              env=subprocess_env(base), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "wrote" in proc.stdout, proc.stdout
    return out


def manifest(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())
