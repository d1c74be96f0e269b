"""ComiRec-protocol evaluation, shared by every family, and its CLI.

For each evaluation user: the model's valid interest vectors, exact top-N over the whole catalogue
per interest (chunked over items, so memory stays bounded), merged into one list of N by
`config.eval.merge` ("score": ComiRec's maximum raw score; "mixture": each interest as a softmax over
the catalogue, weighted by the user's activation share; serving/merge.py has both; "auto" evaluates
with "score" until training ends, then train/loop.py picks one on the valid split); then Recall /
HitRate / NDCG @ {20, 50}, catalogue coverage and, where items have categories, diversity. History items are not excluded unless `exclude_history` is set
(the ComiRec protocol keeps them).

CLI: python -m mirecall_jax.evaluate --workdir DIR [--split valid|test] [--checkpoint best|latest|STEP]
prints one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mirecall_jax import metrics as rank_metrics
from mirecall_jax.models import capacity
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.serving import merge as merge_lib
from mirecall_jax.train.step import item_side

NS = (20, 50)
MODEL_INPUTS = ("user", "history", "history_uploader", "history_tags", "mask")  # batch keys a user tower reads
OPTIONAL_INPUTS = ("history_time",)  # passed when present (PinnerSage ages with time_unit_seconds > 0)


def item_vectors(model, params, tables: dict, num_items: int, chunk: int = 65536) -> jax.Array:
    """The item tower over the whole catalogue: [num_items, D] (row 0 = padding, never retrieved)."""

    @jax.jit
    def encode(ids):
        return model.apply({"params": params}, ids, *item_side(tables, ids), method=model.encode_items)

    parts = []
    for start in range(0, num_items, chunk):
        ids = jnp.arange(start, min(start + chunk, num_items), dtype=jnp.int32)
        parts.append(encode(ids))
    return jnp.concatenate(parts, axis=0)


@functools.partial(jax.jit, static_argnames=("model",))
def _encode_users(model, params, batch):
    out = model.apply({"params": params}, batch, train=False, method=model.encode_users)
    return out.interests, out.mask, out.aux.get("gate")  # gate [b, E] for MoE models, else None


def _drop_history(scores: np.ndarray, ids: np.ndarray, history: np.ndarray) -> np.ndarray:
    """scores [b, K, k] with -inf where the candidate is in the user's history [b, L]."""
    seen = (ids[:, :, :, None] == history[:, None, None, :]) & (history[:, None, None, :] > 0)
    return np.where(seen.any(-1), -np.inf, scores)


def interest_share(state, users: np.ndarray, interests, mask, history_vecs, history_mask, min_count: int):
    """Activation share [b, K] per user: own records, else history share, else global (capacity.py).
    A model without activation records (nothing trained, e.g. PinnerSage) gets the history share."""
    fallback = capacity.history_share(np.asarray(interests), mask, np.asarray(history_vecs), history_mask)
    if "activation_global" not in state.aux:
        return fallback
    glob = np.asarray(state.aux["activation_global"])
    per_user = state.aux.get("activation_user")
    if per_user is None:  # no per-user table: every user falls back to its history
        per_user, users = np.zeros((1, glob.shape[0]), np.float32), np.zeros_like(users)
    own = np.asarray(per_user)[users]  # [b, K]; gathered on host so the table stays where it is
    return capacity.activation_share(own, glob, np.arange(len(users)), min_count, fallback=fallback)


def user_interests(model, state, batch: dict, vecs, config, prune_threshold: float, with_share: bool = False):
    """(interests [b, K, D], mask [b, K], gate [b, E] or None, share [b, K] or None) for an evaluation
    batch, the mask after dynamic-capacity pruning (prune_threshold > 0 needs activation records);
    share (with_share) = the activation shares among the interests queried, as serving computes them."""
    inputs = {key: batch[key] for key in MODEL_INPUTS + OPTIONAL_INPUTS if key in batch}
    interests, mask, gate = _encode_users(model, state.params, inputs)
    mask = np.asarray(mask)
    hist_vecs, min_count = vecs[batch["history"]], config.model.prune_min_count
    share = None
    if prune_threshold > 0:
        share = interest_share(state, batch["user"], interests, mask, hist_vecs, batch["mask"], min_count)
        mask = capacity.prune_interests(mask, share, prune_threshold)
    if with_share:  # among the interests kept after pruning
        share = interest_share(state, batch["user"], interests, mask, hist_vecs, batch["mask"], min_count)
    return interests, mask, gate, share if with_share else None


def evaluate(model, state, dataset, split: str, config, *, prune_threshold: float | None = None) -> dict:
    """Metrics dict for `split` ("valid" / "test") under `config.eval` and `config.model`.

    Dynamic capacity: with `prune_threshold` > 0 (default: config.model.prune_threshold) and
    activation records in `state.aux`, interests whose activation share for the user is below the
    threshold are not queried; the mean number of interests queried is reported as
    `active_interests`. Mixture-of-Experts models also report `gate_mass/e`: expert e's mean gate
    weight over the split's users.
    """
    max_len, ev = config.model.max_len, config.eval
    merge = "score" if ev.merge == "auto" else ev.merge  # "auto" selects checkpoints with the score merge
    threshold = config.model.prune_threshold if prune_threshold is None else prune_threshold
    prune = threshold > 0 and "activation_global" in state.aux
    n_max = max(NS)
    vecs = item_vectors(model, state.params, state.tables, dataset.num_items, ev.chunk_size)
    k = n_max + (max_len if ev.exclude_history else 0)
    recommended, targets, active, gates = [], [], [], []
    for batch in eval_batches(dataset, split, max_len, ev.batch_size, with_timestamps=True):
        interests, mask, gate, share = user_interests(model, state, batch, vecs, config, threshold if prune else 0.0,
                                                      with_share=merge == "mixture")
        b, num_k, d = interests.shape
        scores, ids = rank_metrics.chunked_top_k(interests.reshape(b * num_k, d), vecs, k, chunk_size=ev.chunk_size)
        scores = np.asarray(scores).reshape(b, num_k, k)
        ids = np.asarray(ids).reshape(b, num_k, k)
        if ev.exclude_history:
            scores = _drop_history(scores, ids, batch["history"])
        log_z = None
        if merge == "mixture":  # each interest's softmax normaliser over the catalogue
            log_z = rank_metrics.log_partition(interests.reshape(b * num_k, d), vecs, config.loss.temperature,
                                               ev.chunk_size).reshape(b, num_k)
        top, _, _ = merge_lib.merge(merge, scores, ids, mask, n_max, share=share, log_z=log_z,
                                    mixture_uniform=ev.mixture_uniform, temperature=config.loss.temperature)
        valid = batch["valid"]
        recommended.append(np.asarray(top)[valid])
        targets.append(np.where(batch["targets_mask"], batch["targets"], 0)[valid])
        active.append(mask.sum(-1)[valid])
        if gate is not None:
            gates.append(np.asarray(gate)[valid])
    if not recommended:
        raise ValueError(f"split {split!r} has no evaluation users")
    targets = np.concatenate(targets)  # every batch pads targets to the split's longest list
    recommended = np.concatenate(recommended)
    out = rank_metrics.ranking_metrics(recommended, targets, ns=NS)
    for n in NS:
        out[f"coverage@{n}"] = rank_metrics.coverage(recommended[:, :n], dataset.num_items)
        if dataset.num_categories > 0:
            out[f"diversity@{n}"] = rank_metrics.diversity(recommended, dataset.item_category, n)
    out["active_interests"] = float(np.concatenate(active).mean())
    if gates:
        for e, mass in enumerate(np.concatenate(gates).mean(0)):
            out[f"gate_mass/{e}"] = float(mass)
    out["users"] = int(len(recommended))
    return out


def main(argv=None) -> None:
    from mirecall_jax.train.loop import restore_for_inference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--checkpoint", default="best", help="best | latest | a step number")
    p.add_argument("--exclude_history", action="store_true", help="drop history items from the recommendations")
    args = p.parse_args(argv)
    run = restore_for_inference(args.workdir, args.checkpoint)
    if args.exclude_history:
        run.config.eval.exclude_history = True
    result = evaluate(run.model, run.state, run.dataset, args.split, run.config)
    print(json.dumps({"split": args.split, "step": run.step, **result}, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
