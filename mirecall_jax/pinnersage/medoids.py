"""PinnerSage cluster representatives: medoids, importance, and top-K / sampled interest selection.

Given per-user Ward labels (`ward.cluster_users`: [B, L], -1 on padding, clusters 0, 1, ...):

* medoid of a cluster = the member minimising the summed squared distance to the members.
  Because  sum_j ||x_i - x_j||^2 = n ||x_i - mean||^2 + sum_j ||x_j - mean||^2  and the last term
  is the same for every candidate i, the medoid is the member nearest (squared) to the cluster
  mean. That is O(L*D) per user instead of the O(L^2*D) pairwise matrix, and uses exact
  differences rather than the dot-product expansion. Ties go to the first position.
* importance of a cluster = sum over its members of exp(-lam * age) (PinnerSage), where age =
  last timestamp - timestamp in the configured unit; ages are an input.
* selection: the K medoids of highest importance, or K drawn without replacement with probability
  proportional to importance (Gumbel-top-k: the top K of log(importance) + Gumbel noise is a
  sample of successive draws without replacement). Log-importance is computed with logsumexp,
  so old clusters whose exp(-lam * age) underflow to 0 still rank and sample correctly.

All functions take batched, padded arrays with static shapes and are jitted; `max_clusters` (M)
bounds the cluster ids considered (labels >= M are ignored) and is static.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax


def _one_hot(labels: jax.Array, max_clusters: int) -> jax.Array:
    """[B, L] labels -> [B, L, M] bool membership; -1 (padding) and ids >= M belong to nothing."""
    return labels[..., None] == jnp.arange(max_clusters, dtype=labels.dtype)


@functools.partial(jax.jit, static_argnames=("max_clusters",))
def medoids(emb: jax.Array, labels: jax.Array, max_clusters: int) -> tuple[jax.Array, jax.Array]:
    """Medoid position per cluster: (medoid_index [B, M] int32, -1 if no such cluster; valid [B, M])."""
    x = emb.astype(jnp.float32)  # [B, L, D]
    member = _one_hot(labels, max_clusters)  # [B, L, M]
    count = jnp.sum(member, axis=1)  # [B, M]
    sums = jnp.einsum("blm,bld->bmd", member.astype(jnp.float32), x, precision=lax.Precision.HIGHEST)
    mean = sums / jnp.maximum(count, 1)[..., None].astype(jnp.float32)  # [B, M, D]
    own = jnp.clip(labels, 0, max_clusters - 1)[..., None]  # [B, L, 1] each point's cluster
    own_mean = jnp.take_along_axis(mean, own, axis=1)  # [B, L, D]
    d2 = jnp.sum(jnp.square(x - own_mean), axis=-1)  # [B, L] squared distance to own mean
    cost = jnp.where(member, d2[..., None], jnp.inf)  # [B, L, M]
    index = jnp.argmin(cost, axis=1).astype(jnp.int32)  # [B, M] first position on ties
    valid = count > 0
    return jnp.where(valid, index, -1), valid


def _log_importance(labels: jax.Array, ages: jax.Array, lam, max_clusters: int) -> jax.Array:
    """log(sum_members exp(-lam * age)) per cluster [B, M]; -inf for empty clusters."""
    member = _one_hot(labels, max_clusters)  # [B, L, M]
    logw = -jnp.asarray(lam, jnp.float32) * ages.astype(jnp.float32)  # [B, L]
    terms = jnp.where(member, logw[..., None], -jnp.inf)  # [B, L, M]
    peak = jnp.max(terms, axis=1)  # [B, M]
    safe = jnp.where(jnp.isfinite(peak), peak, 0.0)
    return safe + jnp.log(jnp.sum(jnp.exp(terms - safe[:, None, :]), axis=1))


@functools.partial(jax.jit, static_argnames=("max_clusters",))
def cluster_importance(labels: jax.Array, ages: jax.Array, lam, max_clusters: int) -> jax.Array:
    """Importance per cluster [B, M]: sum over members of exp(-lam * age); 0 for empty clusters."""
    member = _one_hot(labels, max_clusters)  # [B, L, M]
    w = jnp.exp(-jnp.asarray(lam, jnp.float32) * ages.astype(jnp.float32))  # [B, L]
    return jnp.sum(jnp.where(member, w[..., None], 0.0), axis=1)


@functools.partial(jax.jit, static_argnames=("num_interests", "mode", "max_clusters"))
def select_interests(emb: jax.Array, labels: jax.Array, ages: jax.Array, lam, num_interests: int,
                     mode: Literal["top", "sample"] = "top", rng: jax.Array | None = None,
                     max_clusters: int | None = None) -> tuple[jax.Array, jax.Array]:
    """K interest vectors per user: (interests [B, K, D] (medoid embeddings, 0 where invalid), valid [B, K]).

    mode="top": the K clusters of highest importance, most important first (ties: lower id).
    mode="sample": K clusters drawn without replacement with probability proportional to
    importance, in draw order, from the jax PRNG key `rng` (deterministic per key).
    A user with fewer than K clusters gets valid=False in the remaining slots.
    """
    B, L, D = emb.shape
    M = L if max_clusters is None else max_clusters
    medoid, has = medoids(emb, labels, M)  # [B, M]
    score = jnp.where(has, _log_importance(labels, ages, lam, M), -jnp.inf)  # [B, M]
    if mode == "sample":
        if rng is None:
            raise ValueError("select_interests(mode='sample') needs an rng key")
        score = score + jax.random.gumbel(rng, score.shape, jnp.float32)  # Gumbel-top-k
    elif mode != "top":
        raise ValueError(f"mode must be 'top' or 'sample', got {mode!r}")
    if num_interests > M:  # top_k needs k <= M: pad with never-chosen columns
        score = jnp.pad(score, ((0, 0), (0, num_interests - M)), constant_values=-jnp.inf)
        medoid = jnp.pad(medoid, ((0, 0), (0, num_interests - M)), constant_values=-1)
    best, cluster = lax.top_k(score, num_interests)  # [B, K]
    valid = best > -jnp.inf
    position = jnp.take_along_axis(medoid, cluster, axis=1)  # [B, K] index into L
    vectors = jnp.take_along_axis(emb, jnp.clip(position, 0, L - 1)[..., None], axis=1)  # [B, K, D]
    return jnp.where(valid[..., None], vectors, 0), valid
