"""The end of `make demo`: export the best checkpoint, load it as a service would, and print
recommendations for a few synthetic users next to each item's planted topic."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from mirecall_jax.serving.retriever import Retriever


def recommendation_report(retriever: Retriever, dataset, users, n: int = 10, merge: str | None = None) -> list[str]:
    """Lines describing `users`' (test-split positions) histories and recommendations with planted topics."""
    split = dataset.test
    topic = dataset.item_topic
    lines = []
    rows = [int(r) for r in users]
    histories = [[str(dataset.item_ids[i]) for i in dataset.sequence(int(split.users[r]))[: int(split.history_end[r])]]
                 for r in rows]
    recs = retriever.recommend(histories, n=n, merge=merge)
    for r, hist, rec in zip(rows, histories, recs):
        u = int(split.users[r])
        planted = [int(t) for t in dataset.user_topics[u] if t >= 0] if dataset.user_topics is not None else []
        hist_topics = Counter(int(topic[retriever.id_to_index[h]]) for h in hist) if topic is not None else {}
        lines.append(f"user {dataset.user_ids[u]}: planted topics {planted}; history ({len(hist)} items) by topic "
                     f"{dict(hist_topics.most_common())}; {rec.num_interests} interests queried")
        for item, idx, score, k in zip(rec.items, rec.item_indices, rec.scores, rec.interests):
            t = int(topic[idx]) if topic is not None else -1
            mark = "planted" if t in planted else ""
            lines.append(f"    {item:>10}  topic {t:>3}  score {score:7.3f}  interest {k}  {mark}")
        hits = np.mean([int(topic[i]) in planted for i in rec.item_indices]) if topic is not None and rec.items else 0
        lines.append(f"    -> {hits:.0%} of the {len(rec.items)} recommendations are in the user's planted topics")
    return lines


def export_and_show(workdir: str, dataset, num_users: int = 3, n: int = 10) -> str:
    """Export `workdir`'s best checkpoint to WORKDIR/artifact, load it and print recommendations."""
    from mirecall_jax.serving.export import export_from_workdir

    artifact = os.path.join(workdir, "artifact")
    export_from_workdir(workdir, artifact, "best", overwrite=True)
    retriever = Retriever.load(artifact)
    print(f"\nartifact {artifact}: {retriever.manifest['num_items']} items, index {retriever.manifest['index']['kind']}"
          f" (recall@50 {retriever.manifest['index']['recall@50']}), {retriever.num_interests} interests per user")
    for line in recommendation_report(retriever, dataset, range(num_users), n):
        print(line)
    return artifact
