"""Soft activation: MIND's label-aware attention (Li et al., CIKM 2019), the alternative to
step.select_activated's hard argmax.

  s_k = <m_k, stop_gradient(e)>                    interest k vs the target embedding e
  w   = softmax over valid k of  pow(s_k, p)
  v   = sum_k w_k m_k                              [B, D]

p = 0 gives uniform weights over the valid interests (pow(s, 0) = 1), p = 1 a plain softmax, and
p -> inf approaches the argmax (hard) activation -- provided the best score is above 1 in value:
the softmax is over the *absolute* logits |s|^p, so scores inside (-1, 1) all shrink to 0 and the
weights drift back towards uniform (MIND's definition has the same property; scale the scores, or
use select_activated, if they are small).

Sign handling: MIND writes pow(s, p); for even p that maps a strongly *anti*-aligned interest
(s << 0) to a large positive logit, and for non-integer p a negative base is NaN. We use the
sign-preserving power sign(s) |s|^p, which equals s^p for odd integer p, is defined for any real
p > 0 and keeps the order of the scores for every p, so the large-p limit is the argmax for any
sign. |s|^p is clipped to a finite range so large p cannot overflow to inf (inf - inf = NaN in the
softmax); entries that all hit the clip share the weight. p in (0, 1) has an infinite slope at
s = 0; use p >= 1 when training. The target enters the weights through stop_gradient, as in
select_activated (its gradient comes from the loss itself).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mirecall_jax.models.layers import masked_softmax


def label_aware_attention(interests: jnp.ndarray, mask: jnp.ndarray, target: jnp.ndarray,
                          p: float) -> jnp.ndarray:
    """interests [B, K, D], mask [B, K] bool, target [B, D], static p >= 0 -> user vector [B, D]."""
    if p < 0:
        raise ValueError(f"label_aware_attention: p must be >= 0, got {p}")
    scores = jnp.einsum("bkd,bd->bk", interests, jax.lax.stop_gradient(target))  # [B, K]
    if p == 0:
        logits = jnp.zeros_like(scores)
    else:
        big = jnp.finfo(scores.dtype).max / 4  # max - (-max) would overflow; max/4 keeps it finite
        logits = jnp.sign(scores) * jnp.minimum(jnp.abs(scores) ** p, big)  # [B, K]
    weights = masked_softmax(logits, mask)  # [B, K], 0 on invalid interests
    return jnp.einsum("bk,bkd->bd", weights, interests)
