"""Training losses for candidate recall: sampled softmax, in-batch softmax, focal CE, logQ correction.

Everything here is a pure `jnp` function (except `negative_sampling_probs`, which prepares a numpy
table once on the host), so it can be called inside a jitted, sharded train step.

Conventions: items are 1..num_items-1 and id 0 is padding. Losses return a per-example loss [B];
the caller chooses the reduction (mean over valid rows, weighting, ...). Logits are computed in
float32 whatever the embedding dtype, and the softmax uses log-sum-exp, so large logits are safe.

logQ correction (Bengio & Senecal 2008; Yi et al. 2019, "Sampling-bias-corrected neural modeling
for large corpus item recommendations"): a candidate that is sampled with probability Q(item)
appears among the negatives more often than under the true softmax, so its logit is corrected to
`s(u, item) - log Q(item)`. Masked logits use a large finite negative rather than -inf so that a
fully masked row never produces NaN (0 * inf) in the backward pass.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

_MASKED = -1e30  # "minus infinity" for masked logits; exp() underflows to exactly 0


def _focal_ce(log_p_pos: jax.Array, gamma: float) -> jax.Array:
    """Focal cross-entropy  -(1 - p)^gamma * log p  from log p of the positive (Lin et al. 2017).

    gamma = 0 is plain cross-entropy and skips the power entirely (its gradient at p = 1 would be
    0 * inf). `1 - p` is computed as -expm1(log p), which stays accurate when p is close to 1, and is
    floored at 1e-12 so fractional gammas have a finite gradient on rows where p == 1 exactly
    (e.g. masked rows that are zeroed afterwards: a NaN there would leak through `jnp.where`).
    """
    if gamma == 0.0:
        return -log_p_pos
    one_minus_p = jnp.maximum(-jnp.expm1(log_p_pos), 1e-12)
    return -(one_minus_p**gamma) * log_p_pos


def _log_p_positive(pos_logit: jax.Array, neg_logits: jax.Array) -> jax.Array:
    """log softmax probability of the positive over [pos, negatives]: pos - logsumexp([pos, negs]).

    pos_logit [B], neg_logits [B, N] (already masked) -> [B]. Written as logaddexp so the [B, N+1]
    concatenation is never materialised.
    """
    return pos_logit - jnp.logaddexp(pos_logit, jax.nn.logsumexp(neg_logits, axis=-1))


def sampled_softmax_loss(
    user_vecs: jax.Array,  # [B, D]
    pos_emb: jax.Array,  # [B, D]
    pos_ids: jax.Array,  # [B] int
    neg_emb: jax.Array,  # [N, D] negatives shared by the whole batch
    neg_ids: jax.Array,  # [N] int
    neg_log_q: jax.Array | None = None,  # [N] log Q(neg) under the sampling distribution
    pos_log_q: jax.Array | None = None,  # [B] log Q(pos) under the same distribution
    temperature: float = 1.0,
    focal_gamma: float = 0.0,
) -> jax.Array:
    """Sampled softmax with shared negatives, logQ correction and accidental-hit removal -> [B].

    For example b with user vector u, positive y and negatives n_1..n_N:
        s(u, i)   = <u, e_i> / temperature - log Q(i)          (log Q term only where given)
        s(u, n_j) = -inf  if n_j == y                          (accidental hit: same item as y)
        log p_y   = s(u, y) - logsumexp([s(u, y), s(u, n_1), ..., s(u, n_N)])
        loss_b    = -(1 - p_y)^gamma * log p_y                 (gamma = 0: cross-entropy)

    logQ choice: the correction is applied after the temperature (the sampling bias is a property
    of the candidate set, not of the scale of the scores). Passing `pos_log_q` as well corrects the
    positive with the same distribution, which is TF's `sampled_softmax_loss` / Jean et al. 2015 and
    the in-batch recipe of Yi et al. 2019; it is the recommended setting because the softmax then
    only sees *differences* of log Q, so any constant (e.g. log N for N draws, or an unnormalised Q)
    cancels. Correcting only the negatives (Bengio & Senecal's importance-sampling estimate of the
    partition function) is exact only when neg_log_q = log(N * Q); callers doing that must add
    log N themselves.
    """
    u = user_vecs
    pos_logit = jnp.sum(u.astype(jnp.float32) * pos_emb.astype(jnp.float32), axis=-1)  # [B]
    neg_logits = jnp.matmul(u, neg_emb.T, preferred_element_type=jnp.float32)  # [B, N]
    pos_logit = pos_logit / temperature
    neg_logits = neg_logits / temperature
    if neg_log_q is not None:
        neg_logits = neg_logits - neg_log_q.astype(jnp.float32)[None, :]
    if pos_log_q is not None:
        pos_logit = pos_logit - pos_log_q.astype(jnp.float32)
    hit = pos_ids[:, None] == neg_ids[None, :]  # [B, N] accidental hits
    neg_logits = jnp.where(hit, _MASKED, neg_logits)
    return _focal_ce(_log_p_positive(pos_logit, neg_logits), focal_gamma)


def negative_sampling_probs(
    item_count: np.ndarray,  # [num_items] interactions per item (index 0 = padding)
    mode: Literal["uniform", "popularity"] = "popularity",
    alpha: float = 0.75,
) -> np.ndarray:
    """Sampling distribution over the catalogue for `sample_negatives` -> float64 [num_items].

    uniform:     Q(i) ∝ 1                          for i in 1..num_items-1
    popularity:  Q(i) ∝ max(count_i, 1) ** alpha   (word2vec uses alpha = 0.75)
    Q(0) = 0 always. Items never seen in training are floored to a count of 1 ("seen once") so they
    still get sampled as negatives — otherwise the model is never pushed away from them and cold
    items can float to the top at retrieval. With alpha = 0 popularity equals uniform.
    """
    count = np.asarray(item_count, dtype=np.float64)
    if count.ndim != 1 or count.shape[0] < 2:
        raise ValueError(f"item_count must be 1-D with at least 2 entries, got shape {count.shape}")
    if np.any(count < 0):
        raise ValueError("item_count must be non-negative")
    if mode == "uniform":
        weight = np.ones_like(count)
    elif mode == "popularity":
        weight = np.maximum(count, 1.0) ** alpha
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'uniform' or 'popularity'")
    weight[0] = 0.0  # padding is never a negative
    return weight / weight.sum()


def sample_negatives(
    rng: jax.Array, num_negatives: int, sampling_probs: jax.Array  # probs [num_items]
) -> tuple[jax.Array, jax.Array]:
    """Draw `num_negatives` item ids i.i.d. (with replacement) from `sampling_probs`.

    Returns ids [N] int32 in 1..num_items-1 and log_q [N] = log Q(id) (per-draw probability, after
    renormalising). Index 0 is excluded even if its probability is non-zero, and zero-probability
    items are never drawn (logit -inf).
    """
    # Inverse-CDF sampling: O(N log I). `jax.random.categorical` with shape (N,) would draw N x I
    # Gumbel numbers, which dominates the whole train step for catalogues beyond a few thousand.
    probs = jnp.asarray(sampling_probs, dtype=jnp.float32).at[0].set(0.0)  # [num_items]
    cdf = jnp.cumsum(probs)  # [num_items], cdf[0] = 0
    u = jax.random.uniform(rng, (num_negatives,), minval=0.0, maxval=1.0) * cdf[-1]
    # side="right" skips every zero-probability item (equal cdf values), index 0 included.
    ids = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 1, probs.shape[0] - 1).astype(jnp.int32)  # [N]
    log_q_all = jnp.log(probs / cdf[-1])  # renormalised over 1..num_items-1
    return ids, log_q_all[ids]


def _replicate(x: jax.Array) -> jax.Array:
    """All-gather an array that is sharded over an *Explicit* mesh axis (no-op otherwise).

    With explicit sharding (the `jax.make_mesh` default since JAX 0.7) `U @ V.T` with both operands
    sharded on the batch axis is a type error (the result would use the axis twice), so the column
    side is resharded to replicated. Under Auto axes or a single device the sharding type carries no
    mesh axes and XLA's partitioner inserts the same all-gather on its own.
    """
    sharding = jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None or all(s is None for s in spec):
        return x
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, P()))


def in_batch_softmax_loss(
    user_vecs: jax.Array,  # [B, D]
    item_vecs: jax.Array,  # [B, D] positives; row j is also a negative for every row i != j
    item_ids: jax.Array,  # [B] int
    log_q: jax.Array | None = None,  # [B] log Q(item_ids[j]), e.g. from `estimated_log_q`
    temperature: float = 1.0,
    focal_gamma: float = 0.0,
    valid: jax.Array | None = None,  # [B] bool; False = padded row
) -> jax.Array:
    """In-batch softmax: the other rows' positives are the negatives -> per-example loss [B].

        logits[i, j] = <u_i, v_j> / temperature - log Q(item_j)            [B, B]
        masked out (-inf) when j != i and item_ids[j] == item_ids[i]       (same item as the positive)
                          or valid[j] is False                             (padding is no negative)
        log p_i  = logits[i, i] - logsumexp_j logits[i, j]
        loss_i   = -(1 - p_i)^gamma * log p_i,   and 0 where valid[i] is False

    Global batch: when the inputs are sharded over a device mesh on the batch axis, `jit` of this
    function still computes the full global [B, B] logits: each device keeps its rows of U and
    gathers all of V (XLA inserts the all-gather; for Explicit mesh axes `_replicate` requests it),
    so every example sees all B - 1 global negatives, not only its shard's. The gradient w.r.t. V
    is reduce-scattered back by XLA. This is the intended design (more negatives for free); memory
    per device is O(B/devices * B).
    """
    # The diagonal is handled by computing the positive separately and masking every column with
    # the same id as row i (which includes j == i): identical to masking j != i duplicates.
    ids_all = _replicate(item_ids)  # [B] column ids, gathered
    v_all = _replicate(item_vecs)  # [B, D]
    pos_logit = jnp.sum(user_vecs.astype(jnp.float32) * item_vecs.astype(jnp.float32), axis=-1)
    logits = jnp.matmul(user_vecs, v_all.T, preferred_element_type=jnp.float32)  # [B, B]
    pos_logit = pos_logit / temperature
    logits = logits / temperature
    if log_q is not None:
        pos_logit = pos_logit - log_q.astype(jnp.float32)
        logits = logits - _replicate(log_q).astype(jnp.float32)[None, :]
    mask = item_ids[:, None] == ids_all[None, :]  # [B, B] same item (incl. the diagonal)
    if valid is not None:
        mask = mask | ~_replicate(valid)[None, :]
    logits = jnp.where(mask, _MASKED, logits)
    loss = _focal_ce(_log_p_positive(pos_logit, logits), focal_gamma)  # [B]
    if valid is not None:
        loss = jnp.where(valid, loss, 0.0)
    return loss


# --- streaming frequency estimate for in-batch logQ (Yi et al. 2019, Algorithm 2) -------------


class FrequencyState(NamedTuple):
    """Per hash bucket: step it was last seen (-1 = never) and EMA of the gap between sightings."""

    last_step: jax.Array  # [H] int32
    delta: jax.Array  # [H] float32; 0 = no gap observed yet


def init_frequency_state(num_buckets: int) -> FrequencyState:
    return FrequencyState(
        last_step=jnp.full((num_buckets,), -1, dtype=jnp.int32),
        delta=jnp.zeros((num_buckets,), dtype=jnp.float32),
    )


def update_frequency(
    state: FrequencyState,
    item_ids: jax.Array,  # [B] int; 0 = padding, ignored
    step: jax.Array | int,  # global train step, >= 0 and increasing
    lr: float = 0.05,
    valid: jax.Array | None = None,  # [B] bool; rows to ignore
) -> FrequencyState:
    """Record that `item_ids` appeared at `step`; returns the new state.

    For every bucket h = id % H seen in this batch:
        delta[h]     = (1 - lr) * delta[h] + lr * (step - last_step[h])
        last_step[h] = step
    so delta estimates the number of steps between appearances and 1/delta the per-step probability
    of the item being in the batch. Two deliberate refinements of Yi et al.: a bucket's first
    sighting only records the step (there is no gap yet; using step - 0 would inject a huge bogus
    gap), and the first observed gap initialises delta directly instead of being averaged with 0
    (the same bias that Adam's bias correction removes).

    Duplicates: the update is computed per bucket from a "seen this step" mask built with a
    scatter of identical `True` values, so an id appearing several times in a batch counts once and
    the result is deterministic (no write races). Collisions: ids with equal id % H share a bucket
    and the estimate is of their *combined* frequency, i.e. each item's probability is
    overestimated (under-corrected). Use H well above the number of frequently seen items.
    """
    num_buckets = state.delta.shape[0]
    keep = item_ids > 0
    if valid is not None:
        keep = keep & valid
    buckets = jnp.where(keep, item_ids % num_buckets, num_buckets)  # out of range -> dropped
    seen = jnp.zeros((num_buckets,), dtype=bool).at[buckets].set(True, mode="drop")  # [H]
    step = jnp.asarray(step, dtype=jnp.int32)
    gap = (step - state.last_step).astype(jnp.float32)  # [H]
    ema = jnp.where(state.delta > 0, (1.0 - lr) * state.delta + lr * gap, gap)
    delta = jnp.where(seen & (state.last_step >= 0), ema, state.delta)
    last_step = jnp.where(seen, step, state.last_step)
    return FrequencyState(last_step=last_step, delta=delta)


def estimated_log_q(
    state: FrequencyState, item_ids: jax.Array, max_delta: float = 1e4  # ids [B]
) -> jax.Array:
    """log Q(item) = log(1 / delta[id % H]), clipped to [-log(max_delta), 0] -> [B] float32.

    Buckets with no observed gap yet get log Q = 0 (treated as "in every batch"): the conservative
    choice, such items get no popularity boost until their frequency is known. The upper clip on
    delta bounds the boost of very rare items, whose gap estimate is also the noisiest.
    """
    delta = state.delta[item_ids % state.delta.shape[0]]  # [B]
    return -jnp.log(jnp.clip(delta, 1.0, max_delta))
