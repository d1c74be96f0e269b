"""ComiRec-SA (Cen et al., KDD 2020): self-attentive multi-interest extraction.

  H = item embeddings of the history                      [B, L, D]
  A = softmax_over_valid_positions( W2 tanh(W1 (H + P)^T) )   W1 [D_a, D], W2 [K, D_a]  -> [B, K, L]
  interests = A H                                         [B, K, D]

with D_a = 4 D and learned position embeddings P, as in the authors' TensorFlow code
(`Model_ComiRec_SA`): the positions enter the attention scores only; the values are the plain item
embeddings. Both dense maps carry biases there too.

The positional table and the attentive pooling live in layers.py: the single-activation
transformer's "attentive" read-out is literally the same code.
Histories are right-aligned (most recent item at position L-1), so position embeddings index
recency: a batch shorter than `max_len` uses the last L rows of the table.
"""

from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import AttentivePooling, ItemEncoder, PositionEmbedding


class ComiRecSA(nn.Module):
    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    num_interests: int = 4
    max_len: int = 50
    hidden_factor: int = 4  # D_a = hidden_factor * D (ComiRec: 4)
    use_uploader: bool = False  # side features on the input side only; the item tower stays ids
    use_tags: bool = False

    def setup(self):
        self.items = ItemEncoder(self.num_items, self.num_uploaders, self.num_tags, self.dim,
                                 self.use_uploader, self.use_tags)
        self.positions = PositionEmbedding(self.max_len, self.dim)
        self.pool = AttentivePooling(self.num_interests, self.hidden_factor * self.dim)

    def encode_items(self, ids, uploader=None, tags=None) -> jnp.ndarray:
        """The item tower is the id table alone (uploader / tags accepted for the interface)."""
        return self.items.id_embedding(ids)  # [..., D]

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        mask = batch["mask"]  # [B, L]
        h = self.items(batch["history"], batch["history_uploader"], batch["history_tags"])  # [B, L, D]
        h = h * mask[..., None]
        interests, attention = self.pool(self.positions(h), h, mask)  # [B, K, D], [B, K, L]
        valid = jnp.ones(interests.shape[:2], bool)  # [B, K]
        return UserOutput(interests, valid, {"attention": attention})

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"])
