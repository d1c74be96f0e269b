"""Building blocks shared by every family: masked pooling and the item (video) encoder."""

from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of x [..., N, D] over N where mask [..., N] is True; 0 where nothing is valid."""
    m = mask.astype(x.dtype)[..., None]
    return (x * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)


def embed_init(dim: int):
    # std 1/sqrt(D) keeps initial dot products O(1) whatever D is.
    return nn.initializers.normal(stddev=dim**-0.5)


class ItemEncoder(nn.Module):
    """Video id embedding, optionally fused with uploader and pooled-tag embeddings.

    `id_embedding` is the plain id table (what sampled softmax over "video ids only" uses);
    `__call__` is the fused representation: concat(id, uploader, mean(tags)) -> Dense(D), with each
    side feature switchable. Padding ids (0) embed to rows that masks remove downstream.
    """

    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    use_uploader: bool = False
    use_tags: bool = False

    def setup(self):
        self.item_table = nn.Embed(self.num_items, self.dim, embedding_init=embed_init(self.dim), name="item_embedding")
        if self.use_uploader:
            self.uploader_table = nn.Embed(self.num_uploaders, self.dim, embedding_init=embed_init(self.dim), name="uploader_embedding")
        if self.use_tags:
            self.tag_table = nn.Embed(self.num_tags, self.dim, embedding_init=embed_init(self.dim), name="tag_embedding")
        if self.use_uploader or self.use_tags:
            self.fuse = nn.Dense(self.dim, name="side_fusion")

    def id_embedding(self, ids: jnp.ndarray) -> jnp.ndarray:
        return self.item_table(ids)  # [..., D]

    def __call__(self, ids: jnp.ndarray, uploader: jnp.ndarray, tags: jnp.ndarray) -> jnp.ndarray:
        """ids [...], uploader [...], tags [..., T] -> [..., D]."""
        x = self.item_table(ids)
        if not (self.use_uploader or self.use_tags):
            return x
        parts = [x]
        if self.use_uploader:
            # Unknown uploader (0) contributes a zero vector rather than a learned "unknown" row.
            parts.append(self.uploader_table(uploader) * (uploader > 0)[..., None])
        if self.use_tags:
            parts.append(masked_mean(self.tag_table(tags), tags > 0))  # [..., D]
        return self.fuse(jnp.concatenate(parts, axis=-1))

