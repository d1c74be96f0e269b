"""Evaluation math: exact chunked top-k and log-partition in JAX, ranking metrics (numpy).

The evaluation loop / CLI live elsewhere and call these. Conventions: items are 1..M-1, id 0 is
padding and is never recommended; recommendation lists are padded with 0 when shorter than n.
Metric functions are vectorised numpy (no Python loop over users) and return plain floats.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _chunked_top_k(queries, items, item_valid, k: int, chunk_size: int):
    num_items = items.shape[0]  # >= chunk_size (the wrapper caps the chunk at the catalogue)
    num_chunks = -(-num_items // chunk_size)
    k_chunk = min(k, chunk_size)
    num_q = queries.shape[0]

    def step(carry, c):
        best_s, best_i = carry  # [Q, k], [Q, k]
        # The last chunk is slid back to end at the catalogue's end instead of padding the catalogue
        # (a padded copy would cost a whole extra [M, D] per call); rows it shares with the previous
        # chunk are masked so no item is counted twice.
        offset = jnp.minimum(c * chunk_size, num_items - chunk_size)
        chunk = jax.lax.dynamic_slice_in_dim(items, offset, chunk_size)  # [S, D]
        ids = offset + jnp.arange(chunk_size, dtype=jnp.int32)  # [S]
        valid = jax.lax.dynamic_slice_in_dim(item_valid, offset, chunk_size) & (ids >= c * chunk_size)  # [S]
        s = jnp.matmul(queries, chunk.T, precision=jax.lax.Precision.HIGHEST,
                       preferred_element_type=jnp.float32)  # [Q, S]
        s = jnp.where(valid[None, :], s, -jnp.inf)
        cs, ci = jax.lax.top_k(s, k_chunk)  # [Q, k_chunk]
        # The running best comes first in the concatenation and holds lower ids, so on ties
        # top_k (lower index first) keeps the lower id: ties resolve to the lower id overall.
        all_s = jnp.concatenate([best_s, cs], axis=1)  # [Q, k + k_chunk]
        all_i = jnp.concatenate([best_i, ci.astype(jnp.int32) + offset], axis=1)
        new_s, pos = jax.lax.top_k(all_s, k)
        return (new_s, jnp.take_along_axis(all_i, pos, axis=1)), None

    init = (jnp.full((num_q, k), -jnp.inf, jnp.float32), jnp.zeros((num_q, k), jnp.int32))
    (scores, ids), _ = jax.lax.scan(step, init, jnp.arange(num_chunks, dtype=jnp.int32))
    # Slots with no valid item left -> padding id. The (-inf, 0) initial carry already wins such
    # ties (it comes first); stated explicitly so the contract does not hinge on that detail.
    ids = jnp.where(jnp.isneginf(scores), 0, ids)
    return scores, ids


def chunked_top_k(
    queries: jax.Array,  # [Q, D]
    items: jax.Array,  # [M, D] item embedding table, row = item id
    k: int,
    chunk_size: int = 65536,
    item_valid: jax.Array | None = None,  # [M] bool; False = never return
) -> tuple[jax.Array, jax.Array]:
    """Exact inner-product top-k over the whole catalogue -> (scores [Q, k] f32, ids [Q, k] int32).

    Scans the catalogue in chunks of `chunk_size` items with `lax.scan`, keeping a running top-k,
    so peak memory is O(Q * chunk_size) whatever M is. The matmul runs at HIGHEST precision (on
    GPU/TPU the default f32 matmul is TF32/bf16-based, which can reorder near-ties). Item 0 and
    items with item_valid False score -inf and are never returned; M need not divide by
    chunk_size (the last chunk overlaps the one before, with the shared rows masked). If fewer
    than k valid items exist, the trailing slots are (-inf, 0). Ties are deterministic: equal scores come out lower id first.
    Shard `queries` over devices for data-parallel evaluation; `items` is read whole.
    """
    num_items = items.shape[0]
    valid = jnp.arange(num_items) != 0
    if item_valid is not None:
        valid = valid & jnp.asarray(item_valid, dtype=bool)
    chunk = max(1, min(chunk_size, num_items))  # no point padding a small catalogue to 65536
    return _chunked_top_k(queries, items, valid, k=k, chunk_size=chunk)


@jax.jit
def _chunk_log_sum_exp(queries, chunk, inv_temperature):
    s = jnp.matmul(queries, chunk.T, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    return jax.nn.logsumexp(s * inv_temperature, axis=-1)  # [Q]


def log_partition(queries, items, temperature: float = 1.0, chunk_size: int = 65536) -> np.ndarray:
    """log sum_{i >= 1} exp(<q, item_i> / temperature) over the whole catalogue -> [Q] float32.

    queries [Q, D], items [M, D] (row 0 = padding, left out). Each query's softmax normaliser over
    the catalogue: what the mixture merge (serving/merge.py) subtracts to turn an interest's scores
    into log-probabilities. Chunked over items (at most two chunk shapes are compiled).
    """
    if not temperature > 0:
        raise ValueError(f"log_partition: temperature must be > 0, got {temperature}")
    queries = jnp.asarray(queries, jnp.float32)
    out = jnp.full((queries.shape[0],), -jnp.inf, jnp.float32)
    for start in range(1, items.shape[0], chunk_size):
        chunk = jnp.asarray(items[start:start + chunk_size], jnp.float32)
        out = jnp.logaddexp(out, _chunk_log_sum_exp(queries, chunk, 1.0 / temperature))
    return np.asarray(out)


def _row_keys(x: np.ndarray, base: int) -> np.ndarray:
    """Unique int64 key per (row, value): lets one flat np.isin / np.unique act row-wise."""
    return np.arange(x.shape[0], dtype=np.int64)[:, None] * base + x.astype(np.int64)


def _first_occurrence(x: np.ndarray, base: int) -> np.ndarray:
    """[U, L] bool: True where x[u, l] is non-zero and does not occur earlier in row u."""
    flat = _row_keys(x, base).ravel()
    first = np.zeros(flat.shape, dtype=bool)
    first[np.unique(flat, return_index=True)[1]] = True
    return first.reshape(x.shape) & (x > 0)


def _discount(length: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(length) + 2.0)  # position r (0-based) -> 1 / log2(r + 2)


def ranking_metrics(
    recommended: np.ndarray,  # [U, n] int, ranked best first; 0 = padding
    targets: np.ndarray,  # [U, T] int ground truth, in order; 0 = padding
    ns: Sequence[int] = (20, 50),
) -> dict[str, float]:
    """Per-user-averaged recall@N, hitrate@N, ndcg@N and ndcg_comirec@N for each N in ns.

    Targets are a set: repeated ids count once, 0 is padding. A recommended id counts as a hit at
    its first position only. Users with no target are skipped (they have nothing to recall).
        recall@N  = |top-N ∩ targets| / |targets|                  (ComiRec's definition)
        hitrate@N = 1 if top-N ∩ targets is non-empty
        ndcg@N    = DCG / IDCG, the standard binary-relevance NDCG:
                    DCG  = sum over ranked positions r < N holding a hit of 1 / log2(r + 2)
                    IDCG = sum over r < min(|targets|, N) of 1 / log2(r + 2)
        ndcg_comirec@N = ComiRec's `evaluate_full` (THUDM/ComiRec src/train.py), reproduced as is:
                    the top-N list is used as an unordered *set*; the loop runs over the *targets*
                    in their given order, and target number t (0-based) that is in the set adds
                    1 / log2(t + 2) to DCG; IDCG = sum over t < (#hits) of 1 / log2(t + 2);
                    the user scores DCG / IDCG if #hits > 0, else 0. So it rewards hitting the
                    *earliest* future items (not ranking hits high), and is 1 whenever the hits
                    are a prefix of the target list. Here t counts unique targets only.
    """
    rec = np.asarray(recommended, dtype=np.int64)
    tgt = np.asarray(targets, dtype=np.int64)
    n = rec.shape[1]
    base = int(max(rec.max(initial=0), tgt.max(initial=0))) + 1

    tgt_first = _first_occurrence(tgt, base)  # [U, T] unique, non-padding targets
    num_tgt = tgt_first.sum(axis=1)  # [U]
    tgt_keys = _row_keys(tgt, base)
    rec_keys = _row_keys(rec, base)
    is_hit = np.isin(rec_keys, tgt_keys[tgt_first]) & _first_occurrence(rec, base)  # [U, n]
    tgt_rank = np.cumsum(tgt_first, axis=1) - 1  # [U, T] position among unique targets

    users = num_tgt > 0
    disc_n = _discount(n)
    out: dict[str, float] = {}
    for big_n in ns:
        if big_n > n:
            raise ValueError(f"metric cut-off {big_n} exceeds the recommendation length {n}")
        hit = is_hit[:, :big_n]  # [U, N]
        hits = hit.sum(axis=1)  # [U]
        dcg = (hit * disc_n[:big_n]).sum(axis=1)
        idcg = np.cumsum(disc_n)[np.minimum(num_tgt, big_n) - 1]  # any value where num_tgt == 0
        # ComiRec variant: which unique targets are in the top-N set, discounted by target order.
        tgt_hit = np.isin(tgt_keys, rec_keys[:, :big_n][rec[:, :big_n] > 0]) & tgt_first
        c_dcg = np.where(tgt_hit, 1.0 / np.log2(np.maximum(tgt_rank, 0) + 2.0), 0.0).sum(axis=1)
        c_idcg = np.cumsum(_discount(max(tgt.shape[1], 1)))[np.maximum(hits, 1) - 1]
        c_ndcg = np.where(hits > 0, c_dcg / c_idcg, 0.0)

        u = users
        out[f"recall@{big_n}"] = float(np.mean(hits[u] / num_tgt[u])) if u.any() else 0.0
        out[f"hitrate@{big_n}"] = float(np.mean(hits[u] > 0)) if u.any() else 0.0
        out[f"ndcg@{big_n}"] = float(np.mean(dcg[u] / idcg[u])) if u.any() else 0.0
        out[f"ndcg_comirec@{big_n}"] = float(np.mean(c_ndcg[u])) if u.any() else 0.0
    return out


def coverage(recommended: np.ndarray, num_items: int) -> float:
    """Share of catalogue items 1..num_items-1 that appear in at least one recommendation list."""
    rec = np.asarray(recommended).ravel()
    rec = rec[(rec > 0) & (rec < num_items)]
    return float(np.unique(rec).size / max(num_items - 1, 1))


def diversity(recommended: np.ndarray, item_category: np.ndarray, n: int) -> float:
    """ComiRec diversity: share of item pairs (i < j) in each top-n list with different categories.

    Per user: among the first n recommended items with a known category (id 0 padding and items
    whose category is -1 are ignored), with m such items and c_k of them in category k,
        differing pairs = (m^2 - sum_k c_k^2) / 2,   diversity_u = differing / (m (m - 1) / 2)
    averaged over users with m >= 2 (fewer items have no pairs). ComiRec's code raises on unknown
    categories instead of ignoring them; otherwise the definitions agree.
    """
    rec = np.asarray(recommended, dtype=np.int64)[:, :n]
    cat_table = np.asarray(item_category, dtype=np.int64)
    cat = np.where(rec > 0, cat_table[rec], -1)  # [U, n]
    known = cat >= 0
    m = known.sum(axis=1).astype(np.float64)  # [U]
    base = int(cat_table.max(initial=0)) + 1
    keys, counts = np.unique(_row_keys(cat, base)[known], return_counts=True)  # (user, category)
    sum_sq = np.bincount(keys // base, weights=counts.astype(np.float64) ** 2, minlength=len(m))
    users = m >= 2
    if not users.any():
        return 0.0
    pairs = m[users] * (m[users] - 1) / 2
    return float(np.mean((m[users] ** 2 - sum_sq[users]) / 2 / pairs))
