"""Does PinnerSage's number of Ward clusters track the planted number of interests? (synthetic)

Trains item2vec on the synthetic log (or reuses --item2vec WORKDIR), clusters every test user's
history window exactly as the PinnerSage family does (Ward on unit rows, configs/pinnersage_synthetic.py
threshold) and reports the Pearson correlation between clusters per user and (a) the user's planted
interest count, (b) the number of distinct planted topics present in the window. Writes
bench/results/pinnersage_clusters.json.

  .venv/bin/python bench/pinnersage_clusters.py [--item2vec /tmp/i2v_synthetic]
"""

from __future__ import annotations

import argparse
import json
import os

import jax.numpy as jnp
import numpy as np

from mirecall_jax.config import load_config_file
from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.pinnersage import cluster_users
from mirecall_jax.pinnersage.embeddings import load_embeddings
from mirecall_jax.train.loop import train_and_evaluate
from record import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--item2vec", default="/tmp/mirecall_i2v_synthetic", help="item2vec workdir (trained if absent)")
    args = p.parse_args()
    config = load_config_file(os.path.join(ROOT, "configs", "pinnersage_synthetic.py"))
    if not os.path.exists(os.path.join(args.item2vec, "summary.json")):
        train_and_evaluate(load_config_file(os.path.join(ROOT, "configs", "item2vec_synthetic.py")), args.item2vec)
    config.model.pinnersage.source = args.item2vec
    ds = load_dataset(config)
    table, _ = load_embeddings(config.model.pinnersage, ds)
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)  # as cluster_on_unit
    pc = config.model.pinnersage
    clusters, planted, window_topics = [], [], []
    for batch in eval_batches(ds, "test", config.model.max_len, 512):
        keep = batch["valid"]
        labels = np.asarray(cluster_users(jnp.asarray(unit[batch["history"]]), jnp.asarray(batch["mask"]),
                                          pc.ward_threshold, distances=pc.distances))[keep]
        clusters.append(labels.max(axis=1) + 1)
        users = batch["user"][keep]
        planted.append((ds.user_topics[users] >= 0).sum(axis=1))
        topics = np.where(batch["mask"][keep], ds.item_topic[batch["history"][keep]], -1)
        window_topics.append(np.array([len(set(row[row >= 0].tolist())) for row in topics]))
    clusters, planted, window_topics = map(np.concatenate, (clusters, planted, window_topics))
    result = {
        "users": int(len(clusters)), "ward_threshold": pc.ward_threshold,
        "pearson_clusters_vs_planted_interests": float(np.corrcoef(clusters, planted)[0, 1]),
        "pearson_clusters_vs_topics_in_window": float(np.corrcoef(clusters, window_topics)[0, 1]),
        "mean_clusters_by_planted_count": {int(k): float(clusters[planted == k].mean()) for k in np.unique(planted)},
    }
    print(json.dumps(result, indent=1))
    write_result("pinnersage_clusters", result)


if __name__ == "__main__":
    main()
