"""Disagreement regularisers: push the K interests of a user apart (pure functions).

Why: with argmax single activation nothing forces the K interests to differ, and they tend to
collapse onto one direction (or one slot wins everything), so K > 1 buys nothing at retrieval time
(design.md, "more interests can lose to one"). Three terms, each a scalar averaged over the batch.
Notation per example: M [K, D] interests, m [K] validity mask, A [K, L] read-out attention (rows
sum to 1 over the valid positions), cos(x, y) = <x, y> / (max(|x|, eps) max(|y|, eps)).

  cosine        P_cos  = sum_b sum_{i<j, m_i m_j} |cos(M_bi, M_bj)|  /  #valid pairs in the batch
                (0 when there are no pairs, e.g. K = 1)
  orthogonality P_orth = (1/B) sum_b || (N_b N_b^T - I) * (m_b m_b^T) ||_F^2,
                N_b = M_b with rows L2-normalised; only valid rows/columns count
  attention     P_attn = (1/B) sum_b || A_b A_b^T - I ||_F^2            (Lin et al. 2017)
                The off-diagonal part sum_{i!=j} sum_l A_il A_jl is the "position" disagreement of
                Li et al. 2018 (sum of |A^i . A^j| for non-negative A); the diagonal pushes each map
                towards one position (||a_i||^2 -> 1), as in Lin et al.'s penalty. Padded positions
                carry weight 0, so they contribute nothing.

`penalties` applies the weights; only terms with weight > 0 appear there (step.py adds every entry
to the loss), while `disagreement` always returns the raw values for logging.
"""

from __future__ import annotations

import jax.numpy as jnp

from mirecall_jax.models.layers import l2_normalize

_EPS = 1e-8


def _pair_mask(mask: jnp.ndarray | None, shape: tuple[int, int]) -> jnp.ndarray:
    """[B, K] -> [B, K, K] float, 1 where both interests are valid."""
    if mask is None:
        return jnp.ones((shape[0], shape[1], shape[1]), jnp.float32)
    m = mask.astype(jnp.float32)
    return m[:, :, None] * m[:, None, :]


def cosine_penalty(interests: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean |cos| over pairs i < j of valid interests. interests [B, K, D], mask [B, K] -> []."""
    n = l2_normalize(interests, _EPS)  # [B, K, D]
    cos = jnp.abs(jnp.einsum("bid,bjd->bij", n, n))  # [B, K, K]
    k = interests.shape[1]
    upper = jnp.triu(jnp.ones((k, k), jnp.float32), 1)  # i < j
    w = _pair_mask(mask, interests.shape[:2]) * upper  # [B, K, K]
    return (cos * w).sum() / jnp.maximum(w.sum(), 1.0)


def orthogonality_penalty(interests: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean over the batch of ||N N^T - I||_F^2 on unit-norm valid interests. [B, K, D] -> []."""
    n = l2_normalize(interests, _EPS)  # [B, K, D]
    gram = jnp.einsum("bid,bjd->bij", n, n)  # [B, K, K]
    eye = jnp.eye(interests.shape[1], dtype=gram.dtype)
    diff = (gram - eye) * _pair_mask(mask, interests.shape[:2])
    return (diff**2).sum((-2, -1)).mean()


def attention_overlap_penalty(attention: jnp.ndarray) -> jnp.ndarray:
    """Mean over the batch of ||A A^T - I||_F^2. attention [B, K, L] -> []."""
    gram = jnp.einsum("bil,bjl->bij", attention, attention)  # [B, K, K]
    eye = jnp.eye(attention.shape[1], dtype=gram.dtype)
    return ((gram - eye) ** 2).sum((-2, -1)).mean()


def disagreement(interests: jnp.ndarray, attention: jnp.ndarray | None = None,
                 mask: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Raw (unweighted) values of every term that applies: {"cos", "orth"[, "attn"]}."""
    raw = {"cos": cosine_penalty(interests, mask), "orth": orthogonality_penalty(interests, mask)}
    if attention is not None:
        raw["attn"] = attention_overlap_penalty(attention)
    return raw


def penalties(raw: dict[str, jnp.ndarray], weights: dict[str, float]) -> dict[str, jnp.ndarray]:
    """Weighted terms to add to the loss; a term with weight <= 0 is left out, so it adds no
    gradient (its raw value is still in `disagreement`'s result for logging)."""
    return {name: w * raw[name] for name, w in weights.items() if w > 0 and name in raw}
