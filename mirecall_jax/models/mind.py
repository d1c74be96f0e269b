"""MIND (Li et al., CIKM 2019): multi-interest extraction by behaviour-to-interest (B2I) routing.

Behaviour capsules e_i [B, L, D] are the history's item embeddings; one bilinear map S [D, D] is
shared by all interest capsules (B2I routing, unlike CapsNet's per-pair maps), so s_i = S e_i.
Routing logits b [B, K, L] start random (below), then for r = 1..R (R = 3):
  w_ij = softmax_j(b_ij) over interests j, set to 0 at padded positions i
  z_j  = sum_i w_ij s_i                         [B, K, D]
  u_j  = squash(z_j) = |z|^2 / (1 + |z|^2) * z / |z|
  b_ij += <u_j, s_i>                            (skipped after the last iteration)
Gradients: as in ComiRec's implementation (`CapsuleNetwork`, stop_grad=True) iterations 1..R-1 run
on stop_gradient(s) and b is never differentiated; only the last iteration's z = w s carries
gradient to S and the item table (w itself is treated as a constant).

Initial logits: the MIND paper samples b ~ N(0, 1); ComiRec draws a fresh truncated normal per
batch. Zeros are NOT an option: with b = 0 every w_ij = 1/K, so all z_j, u_j and b updates are
identical and the K interests stay equal forever (S is shared). We therefore draw b ~ N(0, 1)
[B, K, L] from the 'dropout' rng stream at train time (fresh per step, as in ComiRec), and at eval
use a fixed N(0, 1) draw [K, L] from a constant key, the same for every user, so inference and
export are deterministic.

Dynamic interest number: K'_u = max(1, min(K, floor(log2 |history_u|))); interests j >= K'_u get
mask False. floor(log2 n) is computed exactly as sum_{t=1..K} [n >= 2^t] (no float log).
Optionally (relu_layer, default on as in ComiRec's MIND) the capsules pass through a shared
Dense(D) + ReLU, the paper's "H" layers after routing (without the user-profile concat).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import ItemEncoder

EVAL_ROUTING_SEED = 0


def squash(z: jnp.ndarray, eps: float = 1e-9) -> jnp.ndarray:
    """squash(z) = |z|^2 / (1 + |z|^2) * z / |z| over the last axis."""
    sq = jnp.sum(z * z, axis=-1, keepdims=True)
    return z * (sq / (1.0 + sq) / jnp.sqrt(sq + eps))


def dynamic_interest_count(history_len: jnp.ndarray, max_interests: int) -> jnp.ndarray:
    """K'_u = max(1, min(K, floor(log2 n))) for n = history_len [B] int -> [B] int32."""
    n = history_len.astype(jnp.int32)[:, None]  # [B, 1]
    powers = 2 ** jnp.arange(1, max_interests + 1, dtype=jnp.int32)  # [K]: 2, 4, ..., 2^K
    return jnp.maximum((n >= powers).sum(-1), 1).astype(jnp.int32)


class MIND(nn.Module):
    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    num_interests: int = 4
    routing_iters: int = 3
    dynamic_k: bool = True  # mask interests beyond K'_u = max(1, min(K, floor(log2 |history|)))
    relu_layer: bool = True  # Dense(D) + ReLU on the capsules after routing
    use_uploader: bool = False  # side features on the input side only; the item tower stays ids
    use_tags: bool = False

    def setup(self):
        if self.routing_iters < 1:
            raise ValueError(f"routing_iters must be >= 1, got {self.routing_iters}")
        self.items = ItemEncoder(self.num_items, self.num_uploaders, self.num_tags, self.dim,
                                 self.use_uploader, self.use_tags)
        self.bilinear = nn.Dense(self.dim, use_bias=False, name="bilinear")  # S, shared by all interests
        if self.relu_layer:
            self.out = nn.Dense(self.dim, name="out")

    def encode_items(self, ids, uploader=None, tags=None) -> jnp.ndarray:
        """The item tower is the id table alone (uploader / tags accepted for the interface)."""
        return self.items.id_embedding(ids)  # [..., D]

    def _initial_logits(self, batch_size: int, length: int, train: bool) -> jnp.ndarray:
        k = self.num_interests
        if train:
            return jax.random.normal(self.make_rng("dropout"), (batch_size, k, length))  # [B, K, L]
        fixed = jax.random.normal(jax.random.key(EVAL_ROUTING_SEED), (k, length))  # [K, L]
        return jnp.broadcast_to(fixed, (batch_size, k, length))

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        mask = batch["mask"]  # [B, L]
        e = self.items(batch["history"], batch["history_uploader"], batch["history_tags"])  # [B, L, D]
        s = self.bilinear(e) * mask[..., None]  # [B, L, D]; S e_i, 0 on padding
        s_const = jax.lax.stop_gradient(s)
        b = self._initial_logits(*mask.shape, train)  # [B, K, L]
        valid_pos = mask[:, None, :]  # [B, 1, L]
        for r in range(self.routing_iters):
            w = jnp.where(valid_pos, nn.softmax(b, axis=1), 0.0)  # [B, K, L], over interests
            last = r == self.routing_iters - 1
            u = squash(jnp.einsum("bkl,bld->bkd", w, s if last else s_const))  # [B, K, D]
            if not last:
                b = b + jnp.einsum("bkd,bld->bkl", u, s_const)
        interests = nn.relu(self.out(u)) if self.relu_layer else u  # [B, K, D]
        k = self.num_interests
        if self.dynamic_k:
            count = dynamic_interest_count(mask.sum(-1), k)  # [B]
            valid = jnp.arange(k)[None, :] < count[:, None]  # [B, K]
        else:
            valid = jnp.ones((mask.shape[0], k), bool)
        return UserOutput(interests, valid, {"attention": w, "interest_count": valid.sum(-1)})

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"])
