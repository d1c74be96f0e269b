"""Do a multi-interest model's interests recover the planted topics? (synthetic)

For test users with >= 2 planted interests: take each valid interest's top-N items (exact search),
label the interest with the majority planted topic of those items, and report the share of
interest pairs whose labels differ, and the share of interests whose label is one of the user's
planted topics. With K interests and fewer planted topics, some pairs must share a topic; dynamic
capacity (--prune_threshold) removes the redundant interests. Writes bench/results/topic_recovery.json.

  .venv/bin/python bench/topic_recovery.py --workdir W [--top 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np

from mirecall_jax import metrics
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.evaluate import item_vectors, user_interests
from mirecall_jax.train.loop import restore_for_inference
from record import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--top", type=int, default=10, help="items per interest used to label it")
    p.add_argument("--prune_threshold", type=float, default=None,
                   help="dynamic-capacity threshold (default: the workdir's model.prune_threshold)")
    args = p.parse_args()
    run = restore_for_inference(args.workdir, "best")
    ds, cfg = run.dataset, run.config
    if ds.user_topics is None:
        raise SystemExit("needs the synthetic dataset (planted topics)")
    threshold = cfg.model.prune_threshold if args.prune_threshold is None else args.prune_threshold
    vecs = item_vectors(run.model, run.state.params, run.state.tables, ds.num_items)
    pairs_differ, pairs, on_planted, interests_seen = 0, 0, 0, 0
    for batch in eval_batches(ds, "test", cfg.model.max_len, cfg.eval.batch_size, with_timestamps=True):
        interests, mask, _, _ = user_interests(run.model, run.state, batch, vecs, cfg, threshold)
        b, k, d = interests.shape
        _, ids = metrics.chunked_top_k(interests.reshape(b * k, d), vecs, args.top)
        topics = ds.item_topic[np.asarray(ids).reshape(b, k, args.top)]  # [b, K, top]
        for row in np.flatnonzero(batch["valid"]):
            planted = ds.user_topics[batch["user"][row]]
            planted = set(planted[planted >= 0].tolist())
            if len(planted) < 2:
                continue
            labels = [np.bincount(topics[row, j]).argmax() for j in range(k) if mask[row, j]]
            interests_seen += len(labels)
            on_planted += sum(int(t) in planted for t in labels)
            for a, c in itertools.combinations(labels, 2):
                pairs += 1
                pairs_differ += int(a != c)
    result = {"family": cfg.model.family, "step": run.step, "top": args.top, "prune_threshold": threshold,
              "interest_pairs": pairs, "pairs_with_different_topics": pairs_differ / max(pairs, 1),
              "interests_on_a_planted_topic": on_planted / max(interests_seen, 1)}
    print(json.dumps(result, indent=1))
    write_result("topic_recovery", result)


if __name__ == "__main__":
    main()
