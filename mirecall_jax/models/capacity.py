"""Dynamic capacity: prune interests that rarely win, using the activation records.

The train step counts, per interest slot k, how often it was the activated one: globally
(activation_global [K]) and per user (activation_user [U, K]). At inference a user's slot k is
kept iff its activation share >= threshold, where

  share_uk = n_uk / sum_k' n_uk'          if the user has sum_k' n_uk' >= max(min_count, 1) records
           = h_uk                         else, if given: the history share (below)
           = g_k / sum_k' g_k'            otherwise (global share; uniform 1/K when no records at all)

Users not seen in training (every evaluation user under the ComiRec split) have no records of their
own. For them the same statistic is measured on their history: h_uk = the share of the user's
history items whose closest interest (argmax_k <m_k, e_item>, the rule the train step uses to pick
the activated interest) is k. A narrow user's history then concentrates on few slots and the others
are pruned, where the global share would prune every unseen user alike.

The most-activated valid interest (by share; first slot on ties) is always kept, so no user loses
all interests; a row whose mask has no valid interest stays empty. Pure functions over either
numpy or jax arrays (numpy in -> numpy out, so the serving side needs no device).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def history_share(interests, interest_mask, history_vecs, history_mask):
    """h [B, K]: share of history items whose closest valid interest is k (0 rows if no history).

    interests [B, K, D], interest_mask [B, K], history_vecs [B, L, D] (item-tower vectors of the
    history), history_mask [B, L].
    """
    xp = _xp(interests, history_vecs)
    scores = xp.einsum("bkd,bld->blk", interests, history_vecs)  # [B, L, K]
    scores = xp.where(xp.asarray(interest_mask)[:, None, :], scores, -xp.inf)
    k = interests.shape[1]
    wins = (xp.argmax(scores, axis=-1)[..., None] == xp.arange(k)) & xp.asarray(history_mask)[..., None]  # [B, L, K]
    counts = wins.sum(1).astype(xp.float32)  # [B, K]
    return counts / xp.maximum(counts.sum(-1, keepdims=True), 1.0)


def activation_share(activation_user, activation_global, users, min_count: int, fallback=None):
    """activation_user [U, K], activation_global [K], users [B] int -> share [B, K] float32.

    `fallback` [B, K] (e.g. history_share) replaces the global share for users with too few
    records of their own, except in rows where it is all zero (no history).
    """
    xp = _xp(activation_user, activation_global, users)
    counts = xp.asarray(activation_user, dtype=xp.float32)[users]  # [B, K]
    total = counts.sum(-1, keepdims=True)  # [B, 1]
    glob = xp.asarray(activation_global, dtype=xp.float32)  # [K]
    glob_total = glob.sum()
    k = glob.shape[0]
    glob_share = xp.where(glob_total > 0, glob / xp.maximum(glob_total, 1.0), xp.float32(1.0 / k))  # [K]
    own = counts / xp.maximum(total, 1.0)  # [B, K]
    use_own = total >= max(min_count, 1)  # [B, 1]
    other = glob_share[None, :]
    if fallback is not None:
        fallback = xp.asarray(fallback, dtype=xp.float32)
        other = xp.where(fallback.sum(-1, keepdims=True) > 0, fallback, other)
    return xp.where(use_own, own, other).astype(xp.float32)


def prune_interests(mask, share, threshold: float):
    """mask [B, K] bool, share [B, K] -> mask with share < threshold dropped, best valid kept."""
    xp = _xp(mask, share)
    mask = xp.asarray(mask, dtype=bool)
    share = xp.asarray(share)
    keep = mask & (share >= threshold)  # [B, K]
    best = xp.argmax(xp.where(mask, share, -xp.inf), axis=-1)  # [B]
    is_best = xp.arange(mask.shape[-1])[None, :] == best[:, None]  # [B, K]
    return keep | (is_best & mask)
