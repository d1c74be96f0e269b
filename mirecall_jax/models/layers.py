"""Building blocks shared by every family: masked pooling and the item (video) encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of x [..., N, D] over N where mask [..., N] is True; 0 where nothing is valid."""
    m = mask.astype(x.dtype)[..., None]
    return (x * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)


def l2_normalize(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """x / max(||x||, eps) over the last axis; rsqrt of the clamped square keeps the gradient finite at 0."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


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

    def uploader_embedding(self, ids: jnp.ndarray) -> jnp.ndarray:
        return self.uploader_table(ids)  # [..., D]; needs use_uploader

    def tag_embedding(self, ids: jnp.ndarray) -> jnp.ndarray:
        return self.tag_table(ids)  # [..., D]; needs use_tags

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


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """Softmax of logits over `axis` restricted to mask; exactly 0 on masked entries.

    A row with nothing valid returns all zeros (no NaN), so its pooled output is 0.
    """
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    w = nn.softmax(logits, axis=axis)
    return jnp.where(mask, w, 0.0)


class PositionEmbedding(nn.Module):
    """Adds a learned [max_len, D] table to x [B, L, D], aligned on the most recent position."""

    max_len: int
    dim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        length = x.shape[-2]
        if length > self.max_len:
            raise ValueError(f"history length {length} exceeds max_len {self.max_len}")
        table = self.param("position_embedding", embed_init(self.dim), (self.max_len, self.dim))
        return x + table[self.max_len - length:]  # [B, L, D]


class AttentivePooling(nn.Module):
    """Multi-head attentive pooling: A = masked softmax_L(W2 tanh(W1 keys^T)); out = A values.

    keys [B, L, D], values [B, L, D'], mask [B, L] -> (pooled [B, K, D'], A [B, K, L]).
    """

    num_heads: int  # K, one head per interest
    hidden_dim: int  # D_a

    @nn.compact
    def __call__(self, keys: jnp.ndarray, values: jnp.ndarray, mask: jnp.ndarray):
        hidden = jnp.tanh(nn.Dense(self.hidden_dim, name="w1")(keys))  # [B, L, D_a]
        logits = nn.Dense(self.num_heads, name="w2")(hidden).swapaxes(-1, -2)  # [B, K, L]
        attention = masked_softmax(logits, mask[:, None, :])  # [B, K, L]
        return jnp.einsum("bkl,bld->bkd", attention, values), attention
