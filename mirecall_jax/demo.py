"""`make demo`: the built-in synthetic dataset end to end on a laptop-sized budget.

1. builds (or loads from cache) the synthetic dataset and prints its statistics and one batch's shapes;
2. trains each demo family briefly on it (PinnerSage clusters the item2vec table trained just
   before it), evaluates on the test split, and prints one table;
3. exports the best multi-interest model (by valid recall@50) to a ScaNN artifact, loads it with the Retriever and
   prints recommendations for 3 users beside each item's planted topic.
Workdirs go under ./workdirs/demo (rerunning resumes / reuses finished runs).
"""

from __future__ import annotations

import json
import os

import numpy as np

from mirecall_jax.config import load_config_file, override
from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.data.sampler import TrainSampler
from mirecall_jax.train.loop import train_and_evaluate

# (row name, config file, overrides for a short demo run)
DEMO_RUNS = [
    ("single_vector", "configs/single_vector_synthetic.py", {"train.max_steps": 1500, "train.eval_every": 500}),
    # A narrow encoder MLP keeps the transformer's demo run to a few minutes on 2 CPU cores.
    ("single_activation", "configs/single_activation_synthetic.py",
     {"train.max_steps": 1500, "train.eval_every": 500, "model.mlp_dim": 128}),
    ("comirec_sa", "configs/comirec_sa_synthetic.py", {"train.max_steps": 1500, "train.eval_every": 500}),
    ("moe", "configs/moe_synthetic.py", {"train.max_steps": 1000, "train.eval_every": 500}),
    # PinnerSage clusters the item2vec table trained just before it (nothing of its own is trained).
    ("item2vec", "configs/item2vec_synthetic.py", {"train.max_steps": 1500, "train.eval_every": 500}),
    ("pinnersage", "configs/pinnersage_synthetic.py", {"model.pinnersage.source": "workdirs/demo/item2vec"}),
]
COLUMNS = ["recall@20", "recall@50", "hitrate@50", "ndcg@50", "diversity@50", "active_interests"]


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_file(os.path.join(root, DEMO_RUNS[0][1]))
    ds = load_dataset(config)
    print("synthetic dataset:", json.dumps(ds.stats, indent=1, sort_keys=True))
    batch = TrainSampler(ds, config.train.batch_size, config.model.max_len, config.seed).batch(0)
    print("one training batch:", {k: (tuple(v.shape), str(v.dtype)) for k, v in batch.items()})

    rows = []
    for name, path, overrides in DEMO_RUNS:
        overrides = {k: os.path.join(root, v) if k == "model.pinnersage.source" else v for k, v in overrides.items()}
        cfg = override(load_config_file(os.path.join(root, path)), overrides)
        workdir = os.path.join(root, "workdirs", "demo", name)
        print(f"\n=== {name}: {path} -> {workdir}")
        summary = train_and_evaluate(cfg, workdir)
        rows.append((name, summary))
    print("\ntest split (ComiRec protocol, synthetic):")
    print(f"{'model':<22}" + "".join(f"{c:>18}" for c in COLUMNS))
    for name, summary in rows:
        print(f"{name:<22}" + "".join(f"{summary['test'].get(c, np.nan):>18.4f}" for c in COLUMNS))

    from mirecall_jax.serving.showcase import export_and_show

    # Show a multi-interest model (the point is that different interests find different topics),
    # the best one by valid recall@50 (chosen on valid, not test).
    multi = [r for r in rows if r[1]["valid"]["active_interests"] > 1]
    best = max(multi, key=lambda r: r[1]["valid"]["recall@50"])[0]
    print(f"\n=== serving the best multi-interest model by valid recall@50 ({best}): export, load, recommend")
    export_and_show(os.path.join(root, "workdirs", "demo", best), ds, num_users=3, n=10)


if __name__ == "__main__":
    main()
