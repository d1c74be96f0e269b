"""Dynamic capacity: prune interests that rarely win, using the activation records.

The train step counts, per interest slot k, how often it was the activated one: globally
(activation_global [K]) and per user (activation_user [U, K]). At inference a user's slot k is
kept iff its activation share >= threshold, where

  share_uk = n_uk / sum_k' n_uk'          if the user has sum_k' n_uk' >= max(min_count, 1) records
           = g_k / sum_k' g_k'            otherwise (global share; uniform 1/K when no records at all)

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


def activation_share(activation_user, activation_global, users, min_count: int):
    """activation_user [U, K], activation_global [K], users [B] int -> share [B, K] float32."""
    xp = _xp(activation_user, activation_global, users)
    counts = xp.asarray(activation_user, dtype=xp.float32)[users]  # [B, K]
    total = counts.sum(-1, keepdims=True)  # [B, 1]
    glob = xp.asarray(activation_global, dtype=xp.float32)  # [K]
    glob_total = glob.sum()
    k = glob.shape[0]
    glob_share = xp.where(glob_total > 0, glob / xp.maximum(glob_total, 1.0), xp.float32(1.0 / k))  # [K]
    own = counts / xp.maximum(total, 1.0)  # [B, K]
    use_own = total >= max(min_count, 1)  # [B, 1]
    return xp.where(use_own, own, glob_share[None, :]).astype(xp.float32)


def prune_interests(mask, share, threshold: float):
    """mask [B, K] bool, share [B, K] -> mask with share < threshold dropped, best valid kept."""
    xp = _xp(mask, share)
    mask = xp.asarray(mask, dtype=bool)
    share = xp.asarray(share)
    keep = mask & (share >= threshold)  # [B, K]
    best = xp.argmax(xp.where(mask, share, -xp.inf), axis=-1)  # [B]
    is_best = xp.arange(mask.shape[-1])[None, :] == best[:, None]  # [B, K]
    return keep | (is_best & mask)
