"""Test metrics of several families on several datasets over seeds, mean +- std, in one table.

Every run is `train_and_evaluate` on `configs/{family}_{dataset}.py` with `seed` overridden (the
seed changes the split, the init and the sampler), so the rows share data, protocol and code.
A popularity row (the 50 most frequent training items for everyone) is the reference. PinnerSage
clusters the item2vec table trained on the same dataset with the same seed.

  .venv/bin/python bench/family_table.py --datasets movietweetings grocery \
      --families single_vector comirec_sa mind single_activation moe --seeds 0 1 2

Writes bench/results/family_table.json and prints a Markdown table. Rows of an existing file are
kept unless this run recomputes them (same dataset and family), so a family whose defaults changed
can be rerun alone: `--families single_activation` (also while another family's run is going).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.config import load_config_file, override
from mirecall_jax.metrics import ranking_metrics
from mirecall_jax.train.loop import train_and_evaluate
from record import RESULTS, write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["recall@20", "recall@50", "hitrate@50", "ndcg@50", "diversity@50", "active_interests"]


def popularity(config) -> dict:
    ds = load_dataset(config)
    top = np.argsort(-ds.item_count, kind="stable")[:50]
    split = ds.test
    targets = np.zeros((len(split.users), int((split.target_end - split.history_end).max())), np.int32)
    for row, (u, h, t) in enumerate(zip(split.users, split.history_end, split.target_end)):
        targets[row, : t - h] = ds.sequence(u)[h:t]
    return ranking_metrics(np.tile(top, (len(targets), 1)), targets, ns=(20, 50))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["movietweetings", "grocery"])
    p.add_argument("--families", nargs="+", default=["single_vector", "comirec_sa", "mind", "single_activation", "moe"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workdir", default="/tmp/mirecall_family_table")
    p.add_argument("--set", nargs="*", default=[], help="extra overrides a.b=value for every run")
    args = p.parse_args()
    overrides = {}
    for kv in args.set:
        key, raw = kv.split("=", 1)
        try:
            overrides[key] = json.loads(raw)  # numbers, true/false, lists
        except json.JSONDecodeError:
            overrides[key] = raw  # plain strings

    path = os.path.join(RESULTS, "family_table.json")

    def stored() -> dict:  # re-read before every write: concurrent runs (other families) keep their rows
        if not os.path.exists(path):
            return {}
        with open(path) as fh:
            return json.load(fh)

    for dataset in args.datasets:
        for family in ["popularity"] + args.families:
            rows = []
            for seed in args.seeds:
                name = "single_vector" if family == "popularity" else family
                config = override(load_config_file(os.path.join(ROOT, "configs", f"{name}_{dataset}.py")),
                                         {**overrides, "seed": seed})
                if family == "popularity":
                    rows.append(popularity(config))
                    continue
                workdir = os.path.join(args.workdir, f"{family}_{dataset}_seed{seed}")
                if family == "pinnersage":  # cluster the item2vec table trained with the same seed
                    source = os.path.join(args.workdir, f"item2vec_{dataset}_seed{seed}")
                    train_and_evaluate(override(load_config_file(os.path.join(ROOT, "configs", f"item2vec_{dataset}.py")),
                                                {**overrides, "seed": seed}), source)
                    config.model.pinnersage.source = source
                summary = train_and_evaluate(config, workdir)
                rows.append({**summary["test"], "best_step": summary["best_step"], "wall_seconds": summary["wall_seconds"]})
            results = {**stored(), f"{dataset}/{family}": rows}
            write_result("family_table", results)
    results = stored()
    print(f"\n| dataset | model | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    datasets = list(dict.fromkeys(key.split("/")[0] for key in results))  # first-seen order
    for key, rows in sorted(results.items(), key=lambda kv: datasets.index(kv[0].split("/")[0])):
        dataset, family = key.split("/")
        cells = []
        for m in METRICS:
            vals = [r[m] for r in rows if m in r]
            cells.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if vals else "-")
        print(f"| {dataset} | {family} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
