"""Merging K per-interest candidate lists into one top-n list per user (evaluation and serving).

Input for U users: scores [U, K, k] (-inf = no candidate: invalid interest, excluded or missing
slot), ids [U, K, k] item indices (0 = padding), interest_valid [U, K] bool. Every merge returns
(ids [U, n] int32, scores [U, n] float32, interest [U, n] int32) padded with (0, -inf, -1) when a
user has fewer than n distinct candidates; `interest` is the slot k whose list supplied the item.

  score        ComiRec: each item once with its maximum score over the interests, by score
               (ties: lower id first); `interest` = the slot with that maximum.
  mixture      each interest as a softmax over the catalogue, mixed by a prior over interests: the
               item's score is log sum_k pi_k p_k(i), p_k(i) = exp(s_ki / t - log Z_k) with Z_k the
               interest's partition function over the whole catalogue (metrics.log_partition; the
               item's term is 0 where interest k did not retrieve it), pi_k = (1 - uniform) * share_k
               + uniform / K_valid with share_k the user's activation share (models/capacity.py;
               renormalised over the valid slots, uniform when it is 0 on all of them) and t the
               training loss's temperature (scores become the logits the loss saw). Raw scores of
               different interests are not on one scale: a softmax fixes each interest's scores only
               up to its own constant (log Z_k), so the score merge lets the interest with the largest
               scores fill the list whatever the user's mix of interests. `interest` = the slot
               contributing the most.
  round_robin  a per-interest quota: interests take turns (strongest first, by their best
               candidate's score), each adding its best candidate not yet taken, until n items.
  diversity    ComiRec's controllable aggregation: greedily add the candidate i maximising
               Q(u, S + i) - Q(u, S) = f(u, i) + lambda * sum_{j in S} g(i, j), with f(u, i) the item's
               maximum score over the interests and g(i, j) = 1 when i and j have different known
               categories (0 when equal or either is unknown, -1). lambda = 0 is the score merge.
"""

from __future__ import annotations

import numpy as np

MERGES = ("score", "mixture", "round_robin", "diversity")


def _group_by_id(scores, ids, interest_valid):
    """Flattened candidates [U, K*k] sorted by id, best score first within an id (then lower slot):
    (ids, scores, slots, dup) with dup True on every copy after an id's first. -inf = no candidate."""
    scores = np.asarray(scores, np.float32)
    ids = np.asarray(ids, np.int64)
    num_users, num_k, k = ids.shape
    flat_ids = ids.reshape(num_users, -1)  # [U, K*k]
    keep = (np.asarray(interest_valid, bool)[:, :, None] & (ids > 0)).reshape(num_users, -1)
    flat_s = np.where(keep, scores.reshape(num_users, -1), -np.inf)
    slot = np.broadcast_to(np.repeat(np.arange(num_k), k)[None, :], flat_ids.shape)  # [U, K*k]
    order = np.argsort(-flat_s, axis=-1, kind="stable")
    order = np.take_along_axis(order, np.argsort(np.take_along_axis(flat_ids, order, -1), -1, kind="stable"), -1)
    sid, ss, sk = (np.take_along_axis(a, order, -1) for a in (flat_ids, flat_s, slot))
    dup = np.zeros(sid.shape, bool)
    dup[:, 1:] = sid[:, 1:] == sid[:, :-1]
    return sid, ss, sk, dup


def _top_n(sid, ss, sk, n: int):
    """Rows of id-sorted candidates with final scores (-inf = drop) -> the n best, padded."""
    order = np.argsort(-ss, axis=-1, kind="stable")[:, :n]  # score descending, lower id first on ties
    out_ids, out_s, out_k = (np.take_along_axis(a, order, -1) for a in (sid, ss, sk))
    empty = np.isneginf(out_s)
    out_ids, out_k = np.where(empty, 0, out_ids), np.where(empty, -1, out_k)
    if out_ids.shape[1] < n:
        w = n - out_ids.shape[1]
        out_ids, out_k = np.pad(out_ids, ((0, 0), (0, w))), np.pad(out_k, ((0, 0), (0, w)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, w)), constant_values=-np.inf)
    return out_ids.astype(np.int32), out_s.astype(np.float32), out_k.astype(np.int32)


def merge_score(scores, ids, interest_valid, n: int):
    """The ComiRec score merge (ties: lower id first), with the interest that supplied each item."""
    sid, ss, sk, dup = _group_by_id(scores, ids, interest_valid)
    return _top_n(sid, np.where(dup, -np.inf, ss), sk, n)


def merge_mixture(scores, ids, interest_valid, n: int, share, log_z, uniform: float = 0.1, temperature: float = 1.0):
    """The mixture merge (module docstring). share [U, K] >= 0 (only valid slots count), log_z [U, K]
    each interest's log-partition over the catalogue at `temperature`."""
    if not temperature > 0:
        raise ValueError(f"mixture merge: temperature must be > 0, got {temperature}")
    if not 0.0 <= uniform <= 1.0:
        raise ValueError(f"mixture merge: uniform must be in [0, 1], got {uniform}")
    valid = np.asarray(interest_valid, bool)
    num_valid = np.maximum(valid.sum(-1, keepdims=True), 1)  # [U, 1]
    share = np.where(valid, np.asarray(share, np.float64), 0.0)  # [U, K], renormalised over valid slots
    total = share.sum(-1, keepdims=True)
    share = np.where(total > 0, share / np.where(total > 0, total, 1.0), valid / num_valid)
    with np.errstate(divide="ignore"):
        log_prior = np.log((1.0 - uniform) * share + uniform * valid / num_valid)  # [U, K]; -inf if invalid
    offset = np.where(valid, log_prior - np.asarray(log_z, np.float64), 0.0)  # [U, K]
    terms = np.asarray(scores, np.float64) / temperature + offset[..., None]  # [U, K, k] log(pi_k p_k(i))
    sid, ss, sk, dup = _group_by_id(terms, ids, valid)  # best term first within an id
    # log sum over the copies of an id: segments start where dup is False (row starts included).
    flat = ss.astype(np.float64).ravel()
    starts = np.flatnonzero(~dup.ravel())
    combined = np.logaddexp.reduceat(flat, starts)
    total = np.full(flat.shape, -np.inf)
    total[starts] = combined
    return _top_n(sid, total.reshape(ss.shape), sk, n)


def _empty(num_users: int, n: int):
    return (np.zeros((num_users, n), np.int32), np.full((num_users, n), -np.inf, np.float32),
            np.full((num_users, n), -1, np.int32))


def merge_round_robin(scores, ids, interest_valid, n: int):
    scores = np.asarray(scores, np.float32)
    ids = np.asarray(ids, np.int64)
    valid = np.asarray(interest_valid, bool)
    out_ids, out_s, out_k = _empty(ids.shape[0], n)
    for u in range(ids.shape[0]):
        ks = [k for k in np.flatnonzero(valid[u])]
        ks.sort(key=lambda k: (-scores[u, k, 0] if np.isfinite(scores[u, k, 0]) else np.inf, k))
        ptr = dict.fromkeys(ks, 0)
        taken: set[int] = set()
        r = 0
        while r < n and ks:
            for k in list(ks):
                row_s, row_i = scores[u, k], ids[u, k]
                p = ptr[k]
                while p < len(row_i) and (row_i[p] <= 0 or not np.isfinite(row_s[p]) or int(row_i[p]) in taken):
                    p += 1
                if p >= len(row_i):  # this interest's list is used up
                    ks.remove(k)
                    continue
                taken.add(int(row_i[p]))
                out_ids[u, r], out_s[u, r], out_k[u, r] = row_i[p], row_s[p], k
                ptr[k] = p + 1
                r += 1
                if r == n:
                    break
    return out_ids, out_s, out_k


def merge_diversity(scores, ids, interest_valid, n: int, item_category: np.ndarray, diversity_lambda: float):
    scores = np.asarray(scores, np.float32)
    ids = np.asarray(ids, np.int64)
    k_total = ids.shape[1] * ids.shape[2]
    pool_ids, pool_s, pool_k = merge_score(scores, ids, interest_valid, k_total)  # deduped, best first
    if diversity_lambda == 0.0:
        return pool_ids[:, :n], pool_s[:, :n], pool_k[:, :n]
    cat_table = np.asarray(item_category, np.int64)
    out_ids, out_s, out_k = _empty(ids.shape[0], n)
    for u in range(ids.shape[0]):
        live = pool_ids[u] > 0
        cand, f, ks = pool_ids[u][live], pool_s[u][live].astype(np.float64), pool_k[u][live]
        cat = cat_table[cand]  # [C]
        known = cat >= 0
        diff = np.zeros(len(cand))  # sum over selected j of g(i, j)
        free = np.ones(len(cand), bool)
        for r in range(min(n, len(cand))):
            gain = np.where(free, f + diversity_lambda * diff, -np.inf)
            best = int(np.argmax(gain))  # first maximum: the higher-scored candidate on ties
            free[best] = False
            out_ids[u, r], out_s[u, r], out_k[u, r] = cand[best], f[best], ks[best]
            if known[best]:
                diff += (known & (cat != cat[best]))
    return out_ids, out_s, out_k


def merge(name: str, scores, ids, interest_valid, n: int, *, item_category=None, diversity_lambda: float = 0.0,
          share=None, log_z=None, mixture_uniform: float = 0.1, temperature: float = 1.0):
    if name == "score":
        return merge_score(scores, ids, interest_valid, n)
    if name == "mixture":
        if share is None or log_z is None:
            raise ValueError("merge='mixture' needs the users' interest shares and log-partitions")
        return merge_mixture(scores, ids, interest_valid, n, share, log_z, mixture_uniform, temperature)
    if name == "round_robin":
        return merge_round_robin(scores, ids, interest_valid, n)
    if name == "diversity":
        if item_category is None:
            raise ValueError("merge='diversity' needs item categories")
        return merge_diversity(scores, ids, interest_valid, n, item_category, float(diversity_lambda))
    raise ValueError(f"merge: expected one of {MERGES}, got {name!r}")
