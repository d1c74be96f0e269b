"""Dynamic capacity on synthetic data: active interests by planted interest count, and the recall cost.

For a trained multi-interest workdir (default: configs/comirec_sa_synthetic.py trained to
/tmp/mirecall_capacity_comirec_sa if absent), evaluates the test split without pruning (the
reference) and with each --thresholds value, printing recall@50, the relative change, and the mean
number of queried interests for users with 1, 2, 3, 4 planted interests. Writes
bench/results/dynamic_capacity.json.

  .venv/bin/python bench/dynamic_capacity.py [--workdir W] [--thresholds 0.1 0.15 0.2 0.25]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mirecall_jax.config import load_config_file
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.evaluate import evaluate, item_vectors, user_interests
from mirecall_jax.train.loop import restore_for_inference, train_and_evaluate
from record import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def active_by_planted(run, vecs, threshold: float) -> dict:
    """Mean queried interests per planted-interest count (synthetic ground truth; {} on real logs).

    vecs [M, D]: the item tower's outputs (computed once for every threshold)."""
    ds, cfg = run.dataset, run.config
    if ds.user_topics is None:
        return {}
    counts, planted = [], []
    for batch in eval_batches(ds, "test", cfg.model.max_len, cfg.eval.batch_size, with_timestamps=True):
        _, mask, _, _ = user_interests(run.model, run.state, batch, vecs, cfg, threshold)
        keep = batch["valid"]
        counts.append(mask.sum(-1)[keep])
        planted.append((ds.user_topics[batch["user"][keep]] >= 0).sum(-1))
    counts, planted = np.concatenate(counts), np.concatenate(planted)
    return {int(p): float(counts[planted == p].mean()) for p in np.unique(planted)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default="/tmp/mirecall_capacity_comirec_sa")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "comirec_sa_synthetic.py"))
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.1, 0.15, 0.2, 0.25])
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.workdir, "summary.json")):
        train_and_evaluate(load_config_file(args.config), args.workdir)
    run = restore_for_inference(args.workdir, "best")
    vecs = item_vectors(run.model, run.state.params, run.state.tables, run.dataset.num_items)
    rows = []
    for t in [0.0] + args.thresholds:
        m = evaluate(run.model, run.state, run.dataset, "test", run.config, prune_threshold=t)
        rows.append({"threshold": t, "recall@50": m["recall@50"], "active_interests": m["active_interests"],
                     "active_by_planted_count": active_by_planted(run, vecs, t)})
    ref = rows[0]["recall@50"]
    print(f"{run.config.model.family} on {run.config.data.format}, checkpoint step {run.step}")
    for r in rows:
        r["recall_change"] = r["recall@50"] / ref - 1.0
        by = "  ".join(f"{k} planted: {v:.2f}" for k, v in r["active_by_planted_count"].items())
        print(f"threshold {r['threshold']:.2f}: recall@50 {r['recall@50']:.4f} ({r['recall_change']:+.1%})  "
              f"active {r['active_interests']:.2f}  [{by}]")
    write_result("dynamic_capacity", {"family": run.config.model.family, "step": run.step, "rows": rows})


if __name__ == "__main__":
    main()
