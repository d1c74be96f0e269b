"""Single-vector two-tower baseline (YouTube-DNN style): mean-pooled history -> MLP -> one vector."""

from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import ItemEncoder, masked_mean


class SingleVector(nn.Module):
    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    hidden_dim: int = 256  # MLP width between the pooled history and the user vector
    use_uploader: bool = False
    use_tags: bool = False
    dropout: float = 0.0

    def setup(self):
        self.items = ItemEncoder(self.num_items, self.num_uploaders, self.num_tags, self.dim,
                                 self.use_uploader, self.use_tags)
        self.hidden = nn.Dense(self.hidden_dim)
        self.out = nn.Dense(self.dim)
        self.drop = nn.Dropout(self.dropout)

    def encode_items(self, ids, uploader, tags) -> jnp.ndarray:
        return self.items(ids, uploader, tags)  # [..., D]

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        h = self.items(batch["history"], batch["history_uploader"], batch["history_tags"])  # [B, L, D]
        pooled = masked_mean(h, batch["mask"])  # [B, D]
        x = self.drop(nn.relu(self.hidden(pooled)), deterministic=not train)
        user = self.out(x)[:, None, :]  # [B, 1, D]
        return UserOutput(user, jnp.ones(user.shape[:2], bool), {})

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"], batch["target_uploader"], batch["target_tags"])
