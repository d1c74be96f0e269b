"""Batched Ward agglomerative clustering of users' histories (PinnerSage): jitted, static shapes.

Ward merges, at every step, the two clusters whose union increases the within-cluster variance the
least. Distances follow scipy, so heights equal `scipy.cluster.hierarchy.linkage(x, 'ward')`:
d(i, j) = ||x_i - x_j|| for points and, after merging i and j, Lance-Williams on squared distances
    d(k, i+j)^2 = ((n_i + n_k) d(k, i)^2 + (n_j + n_k) d(k, j)^2 - n_k d(i, j)^2) / (n_i + n_j + n_k);
a merge's height is d (not squared).

Algorithm: the nearest-neighbour chain, as in scipy. Greedy "merge the globally closest pair" needs
an argmin over the [L, L] matrix per merge, O(L^3) per user. Ward is reducible (d(k, i+j) >=
min(d(k, i), d(k, j))), so the chain gives the same merges: follow nearest neighbours a -> nn(a) ->
... until two clusters are each other's nearest neighbour, merge them, go on from the rest of the
chain. A step scans one row, O(L), and there are <= 4(L-1) steps (2(L-1) pushes, L-1 merges, L-1
waits for an unread row): O(L^2) per user. Merges come out of height order and are sorted after,
as in scipy, whose conventions we copy (start at the first live cluster, a tie goes to the previous
chain element, the union takes the higher slot): even tie order matches scipy unless float32
rounding breaks or makes ties differently from scipy's float64.

Batching: `lax.map` over chunks of <= `chunk` users; in a chunk one `while_loop` moves every user
one chain step. Small state is batch-minor ([L, C]), so each op is vectorised across users; the
distance matrix is [C, L, L], so a row read is a contiguous slice. Only the merged cluster's row
and column are written (a scatter, dropped for users not merging); dead clusters are masked to
+inf when a row is read. Explicit batching instead of `vmap`: a vmapped while_loop would select
over the whole state (the [C, L, L] matrix included) at every iteration.

Flat clusters (`cluster_users`) are cut from the finished tree like `fcluster(Z, t, 'distance')`:
a merge is kept iff the largest height in its subtree is <= t (scipy's monocrit rule: clusters
split where height > t); `max_clusters` raises the cut as fcluster's 'maxclust' would.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_INF = np.float32(np.inf)


class WardMerges(NamedTuple):
    """Merges per user in discovery (chain) order, not height order; slots as in scipy's nn_chain.

    Merge k joins slots lo[k] < hi[k]; the union takes slot hi, slot lo dies. Rows >= n_merges
    are padding. A user with n valid points has n_merges = max(n - 1, 0).
    """

    lo: jax.Array  # [B, L-1] int32
    hi: jax.Array  # [B, L-1] int32
    height: jax.Array  # [B, L-1] float32, scipy units (not squared)
    n_merges: jax.Array  # [B] int32


class _Chain(NamedTuple):  # while-loop carry for one chunk of C users; [L, C] is batch-minor
    t: jax.Array  # [] step counter
    dist: jax.Array  # [C, L, L] squared Ward distances, +inf on pairs with padding
    size: jax.Array  # [L, C] cluster size per slot, 0 = dead or padding
    chain: jax.Array  # [L, C] the chain, a stack of slots; chain[chain_len - 1] is its top
    chain_len: jax.Array  # [C]
    top: jax.Array  # [C] chain top
    prev: jax.Array  # [C] element below the top (meaningful when chain_len > 1)
    waiting: jax.Array  # [C] top and prev are reciprocal but prev's row has not been read
    cache_slot: jax.Array  # [C] slot whose current row is in cache_row (-1: none)
    cache_row: jax.Array  # [L, C]
    write_slot: jax.Array  # [C] slot whose row and column new_row is written next step (L: none)
    new_row: jax.Array  # [L, C]
    n_merged: jax.Array  # [C]
    rec_pair: jax.Array  # [T, C] lo * L + hi of the merge made at step t, -1 if none
    rec_h2: jax.Array  # [T, C] its squared height


def _take(v: jax.Array, idx: jax.Array) -> jax.Array:
    """v[idx[c], c] for v [K, C] and idx [C] (a gather of C scalars)."""
    return jnp.take_along_axis(v, idx[None, :], axis=0, mode="promise_in_bounds")[0]


def _first_min(v: jax.Array, iota: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min, first index of the min) along axis 0. Two plain reductions: XLA:CPU's variadic
    argmin reduction is several times slower."""
    m = jnp.min(v, axis=0)
    return m, jnp.min(jnp.where(v == m[None], iota, v.shape[0]), axis=0)


def _pairwise_sq(x: jax.Array, valid: jax.Array, distances: str) -> jax.Array:
    """Squared Euclidean distances [C, L, L] of x [C, L, D].

    "direct": sum of squared differences: exact 0 for duplicate points, no cancellation.
    "gram": ||a||^2 + ||b||^2 - 2 a.b on points centred per user, clamped at 0: one batched matmul,
    ~2.5x faster on CPU, absolute error ~1e-7 * ||x - mean||^2 (duplicates get ~0, not exactly 0).
    """
    if distances == "direct":
        return jnp.sum(jnp.square(x[:, :, None, :] - x[:, None, :, :]), axis=-1)
    if distances != "gram":
        raise ValueError(f"distances must be 'direct' or 'gram', got {distances!r}")
    w = valid[..., None].astype(x.dtype)  # [C, L, 1]
    x = x - jnp.sum(x * w, axis=1, keepdims=True) / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
    g = lax.dot_general(x, x, (((2,), (2,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)  # [C, L, L]
    sq = jnp.diagonal(g, axis1=1, axis2=2)  # [C, L]
    return jnp.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * g, 0.0)


def _chain_linkage(x: jax.Array, valid: jax.Array, distances: str) -> tuple[jax.Array, ...]:
    """NN-chain Ward linkage of C users. x [C, L, D] float32, valid [C, L] bool.

    Returns lo, hi, height [L-1, C] in discovery order and n_merged [C].
    """
    C, L, _ = x.shape
    T = 4 * (L - 1)  # steps bound: 2(L-1) pushes + (L-1) merges + (L-1) waits; never truncates
    iota = lax.broadcasted_iota(jnp.int32, (L, C), 0)  # [L, C] slot index
    users = jnp.arange(C)
    dist = jnp.where(valid[:, :, None] & valid[:, None, :], _pairwise_sq(x, valid, distances), _INF)
    todo = jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32) - 1, 0)  # [C] merges to make
    zc = jnp.zeros(C, jnp.int32)
    init = _Chain(
        t=jnp.int32(0), dist=dist, size=valid.T.astype(jnp.float32), chain=jnp.zeros((L, C), jnp.int32),
        chain_len=zc, top=zc, prev=zc, waiting=jnp.zeros(C, bool), cache_slot=zc - 1,
        cache_row=jnp.zeros((L, C), jnp.float32), write_slot=zc + L, new_row=jnp.zeros((L, C), jnp.float32),
        n_merged=zc, rec_pair=jnp.full((T, C), -1, jnp.int32), rec_h2=jnp.zeros((T, C), jnp.float32))

    def step(s: _Chain) -> _Chain:
        # Write the previous step's merged row and column first: reading `dist` after the write
        # lets XLA update the [C, L, L] buffer in place (a read before it forces a full copy).
        new = s.new_row.T  # [C, L]
        dist = s.dist.at[users, s.write_slot].set(new, mode="drop", unique_indices=True)
        dist = dist.at[users, :, s.write_slot].set(new, mode="drop", unique_indices=True)
        active = s.n_merged < todo  # [C]
        alive = s.size > 0  # [L, C]
        # An empty chain starts at the first live cluster.
        start = active & (s.chain_len == 0)
        first = jnp.min(jnp.where(alive, iota, L), axis=0)
        chain = s.chain.at[jnp.where(start, 0, L), users].set(first, mode="drop", unique_indices=True)
        chain_len = jnp.where(start, 1, s.chain_len)
        top, prev = jnp.where(start, first, s.top), s.prev
        # Read one row: the top's, or prev's when a merge is waiting for it.
        read = jnp.where(s.waiting, prev, top)
        row = dist.at[users, read].get(mode="promise_in_bounds").T  # [L, C]
        row = jnp.where(alive & (iota != read[None]), row, _INF)
        d_min, nn = _first_min(row, iota)
        d_prev = _take(row, prev)
        # Reciprocal nearest neighbours; a tie goes to prev, as in scipy (no cycles).
        reciprocal = (chain_len > 1) & (d_prev <= d_min) & ~s.waiting
        cached = s.cache_slot == prev
        merge = active & (s.waiting | (reciprocal & cached))
        wait = active & reciprocal & ~cached
        push = active & ~reciprocal & ~s.waiting
        # Merge top and prev: Lance-Williams on squared distances for every live k.
        row_top = jnp.where(s.waiting[None], s.cache_row, row)
        row_prev = jnp.where(s.waiting[None], row, s.cache_row)
        h2 = jnp.where(s.waiting, _take(row, top), d_prev)
        n_top, n_prev, size = _take(s.size, top), _take(s.size, prev), s.size
        lo, hi = jnp.minimum(top, prev), jnp.maximum(top, prev)
        lw = ((n_top + size) * row_top + (n_prev + size) * row_prev - size * h2) / (n_top + n_prev + size)
        lw = jnp.where(alive & (iota != top) & (iota != prev), jnp.maximum(lw, 0.0), _INF)  # [L, C]
        m = merge[None]
        size = jnp.where(m & (iota == hi), n_top + n_prev, jnp.where(m & (iota == lo), 0.0, size))
        # Chain bookkeeping: push nn, or pop the merged pair.
        chain = chain.at[jnp.where(push, chain_len, L), users].set(nn, mode="drop", unique_indices=True)
        new_len = jnp.where(push, chain_len + 1, jnp.where(merge, chain_len - 2, chain_len))
        below1 = _take(chain, jnp.maximum(new_len - 1, 0))
        below2 = _take(chain, jnp.maximum(new_len - 2, 0))
        keep = push | wait  # the row just read stays valid until the next merge
        return _Chain(
            t=s.t + 1, dist=dist, size=size, chain=chain, chain_len=new_len,
            top=jnp.where(push, nn, jnp.where(merge, below1, top)),
            prev=jnp.where(push, top, jnp.where(merge, below2, prev)),
            waiting=wait, cache_slot=jnp.where(merge, -1, jnp.where(keep, top, s.cache_slot)),
            cache_row=jnp.where(keep[None], row, s.cache_row), write_slot=jnp.where(merge, hi, L),
            new_row=lw, n_merged=s.n_merged + merge,
            rec_pair=lax.dynamic_update_slice(s.rec_pair, jnp.where(merge, lo * L + hi, -1)[None], (s.t, 0)),
            rec_h2=lax.dynamic_update_slice(s.rec_h2, h2[None], (s.t, 0)))

    s = lax.while_loop(lambda s: (s.t < T) & jnp.any(s.n_merged < todo), step, init)
    # Compact the per-step records to merge order: merge k goes to row k.
    made = s.rec_pair >= 0  # [T, C]
    pos = jnp.where(made, jnp.cumsum(made, axis=0, dtype=jnp.int32) - 1, L)
    cols = jnp.broadcast_to(users, (T, C))
    pair = jnp.zeros((L - 1, C), jnp.int32).at[pos, cols].set(s.rec_pair, mode="drop", unique_indices=True)
    h2 = jnp.zeros((L - 1, C), jnp.float32).at[pos, cols].set(s.rec_h2, mode="drop", unique_indices=True)
    return pair // L, pair % L, jnp.sqrt(h2), s.n_merged


def _flat_labels(lo, hi, height, n_merged, valid, threshold, max_clusters: int | None) -> jax.Array:
    """fcluster-style flat labels from chain records. lo/hi/height [L-1, C], valid [L, C] -> [L, C]."""
    L, C = valid.shape
    iota = lax.broadcasted_iota(jnp.int32, (L, C), 0)

    def subtree_max(k, md_slot):  # largest height in merge k's subtree (fcluster's monocrit) [C]
        return jnp.maximum(jnp.maximum(_take(md_slot, lo[k]), _take(md_slot, hi[k])), height[k])

    cut = threshold  # [C]
    if max_clusters is not None:  # need >= n - max_clusters merges: raise the cut to that height
        def record(k, carry):
            md_slot, md = carry  # [L, C], [L-1, C]
            mk = subtree_max(k, md_slot)
            return jnp.where(iota == hi[k][None], mk[None], md_slot), md.at[k].set(mk)

        zero = (jnp.zeros((L, C), jnp.float32), jnp.zeros((L - 1, C), jnp.float32))
        md = lax.fori_loop(0, L - 1, record, zero)[1]
        md = jnp.where(lax.broadcasted_iota(jnp.int32, (L - 1, C), 0) < n_merged[None], md, _INF)
        need = jnp.sum(valid, axis=0, dtype=jnp.int32) - max_clusters  # [C]
        kth = _take(jnp.sort(md, axis=0), jnp.clip(need - 1, 0, L - 2))
        cut = jnp.where(need > 0, jnp.maximum(cut, kth), cut)

    def union(k, carry):  # keep merge k if its subtree max <= cut: both children are whole clusters
        root, slot, md_slot = carry  # root: smallest point index of each point's flat cluster
        mk = subtree_max(k, md_slot)
        keep = (k < n_merged) & (mk <= cut)  # [C]
        members = (slot == lo[k][None]) | (slot == hi[k][None])  # [L, C] points of the two children
        new_root = jnp.min(jnp.where(members, root, L), axis=0)
        root = jnp.where(members & keep[None], new_root[None], root)
        slot = jnp.where(slot == lo[k][None], hi[k][None], slot)  # lo's points now live in slot hi
        return root, slot, jnp.where(iota == hi[k][None], mk[None], md_slot)

    root = lax.fori_loop(0, L - 1, union, (iota, iota, jnp.zeros((L, C), jnp.float32)))[0]
    first = (root == iota) & valid  # a cluster's first member
    rank = jnp.cumsum(first, axis=0, dtype=jnp.int32) - 1  # [L, C] cluster number by first member
    return jnp.where(valid, jnp.take_along_axis(rank, root, axis=0), -1)


def _map_chunks(fn: Callable, chunk: int, *arrays: jax.Array):
    """Apply fn to chunks of at most `chunk` users (`lax.map`), sized evenly so padding is < 1 chunk."""
    B = arrays[0].shape[0]
    n = -(-B // max(1, chunk))
    C = -(-B // n)
    padded = [a if n * C == B else jnp.pad(a, [(0, n * C - B)] + [(0, 0)] * (a.ndim - 1)) for a in arrays]
    out = lax.map(lambda xs: fn(*xs), tuple(a.reshape(n, C, *a.shape[1:]) for a in padded))
    return jax.tree.map(lambda o: o.reshape(n * C, *o.shape[2:])[:B], out)


@functools.partial(jax.jit, static_argnames=("chunk", "distances"))
def ward_merges(emb: jax.Array, mask: jax.Array, *, chunk: int = 256, distances: str = "direct") -> WardMerges:
    """Full Ward linkage of every user. emb [B, L, D], mask [B, L] -> WardMerges (discovery order).

    `chunk`: users per `lax.map` step (256 is fastest on CPU); `distances`: see `_pairwise_sq`.
    """

    def one_chunk(x, valid):
        lo, hi, h, n = _chain_linkage(x.astype(jnp.float32), valid.astype(bool), distances)
        return lo.T, hi.T, h.T, n

    return WardMerges(*_map_chunks(one_chunk, chunk, emb, mask))


@functools.partial(jax.jit, static_argnames=("max_clusters", "chunk", "distances"))
def cluster_users(emb: jax.Array, mask: jax.Array, threshold, max_clusters: int | None = None,
                  *, chunk: int = 256, distances: str = "direct") -> jax.Array:
    """Ward flat clusters per user: labels [B, L] int32, -1 on padding, numbered by first member.

    Equals `fcluster(linkage(emb[b][mask[b]], 'ward'), t=threshold, criterion='distance')` up to
    renumbering (merges of height <= threshold are kept), then merges further while a user has
    more than `max_clusters` clusters. `threshold` is a scalar or [B] array and may be traced;
    `chunk` and `distances` as in `ward_merges`.
    """
    B, L = mask.shape
    if max_clusters is not None and max_clusters < 1:
        raise ValueError(f"max_clusters must be >= 1 or None, got {max_clusters}")
    if L == 1:
        return jnp.where(mask.astype(bool), 0, -1).astype(jnp.int32)
    thr = jnp.broadcast_to(jnp.asarray(threshold, jnp.float32), (B,))

    def one_chunk(x, valid, t):
        valid = valid.astype(bool)
        lo, hi, h, n = _chain_linkage(x.astype(jnp.float32), valid, distances)
        return _flat_labels(lo, hi, h, n, valid.T, t, max_clusters).T

    return _map_chunks(one_chunk, chunk, emb, mask, thr)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def ward_linkage(x, pad_to: int | None = None) -> np.ndarray:
    """scipy-format Ward linkage [(n-1), 4] of one [n, d] array, via the padded batched kernel.

    Rows are (id_a, id_b, height, size), ids 0..n-1 for points and n, n+1, ... for merges in row
    order, id_a < id_b, rows sorted by height (stable in discovery order), exactly like scipy.
    Points are padded to `pad_to` (default: the next power of two) and features with zero columns
    to a power of two (distances unchanged), so few shapes are compiled. Computed in float32.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"ward_linkage needs an [n >= 2, d] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("ward_linkage: the input contains NaN or inf")
    n, d = x.shape
    L = _next_pow2(n) if pad_to is None else int(pad_to)
    if L < n:
        raise ValueError(f"pad_to={pad_to} is smaller than n={n}")
    emb = np.zeros((1, L, _next_pow2(d)), np.float32)
    emb[0, :n, :d] = x
    mask = np.arange(L)[None, :] < n
    m = jax.device_get(ward_merges(emb, mask, chunk=1))
    return _to_scipy(m.lo[0, : n - 1], m.hi[0, : n - 1], m.height[0, : n - 1], n)


def _to_scipy(lo: np.ndarray, hi: np.ndarray, height: np.ndarray, n: int) -> np.ndarray:
    """Chain records -> scipy linkage: stable sort by height, then ids by union-find (scipy `label`)."""
    h = height.astype(np.float64)
    order = np.argsort(h, kind="mergesort")
    parent = np.arange(2 * n - 1)
    size = np.ones(2 * n - 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    z = np.zeros((n - 1, 4))
    for k, o in enumerate(order):
        a, b = sorted((find(int(lo[o])), find(int(hi[o]))))
        z[k] = a, b, h[o], size[a] + size[b]
        parent[a] = parent[b] = n + k
        size[n + k] = z[k, 3]
    return z
