"""What every trainable family's Linen module provides.

A family is a user tower plus a loss; the data pipeline, train loop, evaluation and export are
shared, so each module exposes the same three methods:

  encode_users(batch, train) -> UserOutput(interests [B, K, D], mask [B, K] bool, aux dict)
  encode_items(ids [...], uploader [...], tags [..., T]) -> [..., D]   (the item tower)
  __call__(batch, train) -> touches every parameter (used for init)

`mask` marks the interests that exist for each user (pruned or routed-away interests are False);
evaluation and export only query valid interests.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class UserOutput(NamedTuple):
    interests: jnp.ndarray  # [B, K, D]
    mask: jnp.ndarray  # [B, K] bool
    aux: dict  # family-specific extras (attention maps for regularisers, gate weights, ...)
