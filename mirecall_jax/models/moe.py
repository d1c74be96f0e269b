"""Mixture-of-Experts two-tower (iQIYI's second recall family).

User tower (B users, L history positions, T tags per item, E experts):
  p_v = masked_mean(U_item[history], mask)                          [B, D]
  p_u = masked_mean(U_uploader[history_uploader], mask & uploader > 0)
  p_t = masked_mean(U_tag[history_tags as a [B, L*T] bag], mask & tag > 0)
  x   = dropout([p_v, p_u, p_t])                                    [B, 3D]
  m_e = W2_e dropout(relu(W1_e x + b1_e)) + b2_e,  e = 1..E          [B, E, D]  (experts = interests)
  g   = softmax(gate(x)),  gate = Dense(E) or Dense(gate_hidden)-relu-Dense(E)   [B, E]
Video tower:  v = MLP(ItemEncoder(id, uploader, tags))  (MLP only with item_mlp)   [..., D]
With `normalize` (default) m_e and v are L2-normalised, so scores are cosines and loss.temperature
sets their scale. Unnormalised towers reach low in-batch loss by growing norms, which memorises
the small training logs: on the synthetic log normalising (temperature 0.05) took test recall@50
from 0.4146 to 0.4515, dropout 0.2 on top to 0.4775 (bench numbers in README).

`share_embeddings` (default): U_item, U_uploader, U_tag are the video tower's id / uploader / tag
tables (ItemEncoder), so every example trains a row from both sides, as in YouTube-DNN (a side
table the video tower does not fuse stays the user tower's own); off, the user tower has its own
tables (one more num_items x D table; 0.4775 vs 0.4817 shared on synthetic).

aggregation (how the experts score a video v):
  "max":   s(u, v) = max_e <m_e, v>. This is the shared step's single activation: encode_users
           returns all E experts (mask True in training), `select_activated` picks the argmax.
           The gate is not in the score, so training it needs its own signal: a router loss
           (penalty "router") = router_weight * mean_b -log g_b[a_b], a_b = argmax_e <m_e, sg(v_b)>
           the activated expert; the gate then predicts which interests a user actually uses and
           `gate_threshold` pruning at inference is meaningful.
  "gated": s(u, v) = sum_e g_e <m_e, v> = <sum_e g_e m_e, v>. encode_users returns the single
           vector u = sum_e g_e m_e as K = 1 (mask True), in training *and* at inference: the
           experts are trained only through their gated sum, so querying them one by one would
           score videos with a function that was never trained. "gated" is one ANN query per user;
           multi-query retrieval is "max".
Load balancing (penalty "balance", Switch Transformer, Fedus et al. 2021) on the routing
distribution r [B, E] that decides which experts get trained: r = g for "gated"; for "max"
r = softmax_e(<m_e, sg(v)>), whose argmax is the activated expert:
  balance = E * sum_e f_e * P_e,   f_e = mean_b 1[argmax_e' r_be' = e] (no gradient),  P_e = mean_b r_be
= 1 for uniform usage, E when every example uses one expert; if every example has the same r,
balance = E * max_e r_e, minimal at r uniform. Training needs batch["target*"] for "max" (the step's
training batches carry them). gate_threshold (inference, "max" only): mask_be = g_be >= threshold
or e = argmax_e g_be (every user keeps its top expert).
aux: gate [B, E], gate_mass [E] (mean gate per expert), in training also balance (unweighted),
penalties {balance, router} (weighted, only terms with weight > 0). Intermediates sown under
"intermediates": expert_out [B, E, D], gate [B, E], route [B, E] (training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import ItemEncoder, embed_init, l2_normalize, masked_mean

AGGREGATIONS = ("max", "gated")
_EPS = 1e-6  # smallest norm l2_normalize divides by


def load_balance_loss(route: jnp.ndarray) -> jnp.ndarray:
    """Switch-Transformer load balance E * sum_e f_e P_e of routing probs route [B, E] -> []."""
    num_experts = route.shape[-1]
    top = jax.nn.one_hot(jnp.argmax(route, axis=-1), num_experts, dtype=route.dtype)  # [B, E]
    f = jax.lax.stop_gradient(top.mean(0))  # [E] share of examples routed to e
    return num_experts * jnp.sum(f * route.mean(0))


class Experts(nn.Module):
    """E independent two-layer MLPs applied to the same input: x [B, F] -> [B, E, D] (one einsum)."""

    num_experts: int
    hidden: int
    dim: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        init = nn.initializers.lecun_normal(batch_axis=(0,))  # fan-in per expert, not E * fan-in
        e, f = self.num_experts, x.shape[-1]
        w1 = self.param("w1", init, (e, f, self.hidden))
        b1 = self.param("b1", nn.initializers.zeros, (e, self.hidden))
        w2 = self.param("w2", init, (e, self.hidden, self.dim))
        b2 = self.param("b2", nn.initializers.zeros, (e, self.dim))
        h = nn.relu(jnp.einsum("bf,efh->beh", x, w1) + b1)  # [B, E, H]
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return jnp.einsum("beh,ehd->bed", h, w2) + b2  # [B, E, D]


class MoETwoTower(nn.Module):
    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    num_experts: int = 4  # E = K interests
    expert_hidden: int = 256  # hidden width of each expert MLP and of the video-tower MLP
    gate_hidden: int = 0  # 0: linear gate x -> E logits; > 0: one hidden relu layer of this width
    dropout: float = 0.0  # on the pooled features x and inside the experts (training only)
    use_uploader: bool = True  # video tower: fuse the uploader embedding
    use_tags: bool = True  # video tower: fuse the mean tag embedding
    aggregation: str = "max"  # "max" | "gated" (module docstring)
    balance_weight: float = 0.01  # weight of the load-balancing loss (0 = off)
    router_weight: float = 0.1  # "max" only: weight of the gate's router cross-entropy (0 = off)
    item_mlp: bool = True  # video tower: Dense(expert_hidden)-relu-Dense(D) on the fused embedding
    gate_threshold: float = 0.0  # "max", inference: drop experts whose gate is below it (0 = keep all)
    share_embeddings: bool = True  # user-side pools read the video tower's id (and fused side) tables
    normalize: bool = True  # L2-normalise expert and video vectors: scores are cosines (scaled by 1/temperature)

    def setup(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"MoETwoTower.aggregation: expected one of {AGGREGATIONS}, got {self.aggregation!r}")
        init = embed_init(self.dim)
        # A table the video tower does not have (its side feature off) is the user tower's own.
        if not self.share_embeddings:
            self.user_item_table = nn.Embed(self.num_items, self.dim, embedding_init=init)
        if not (self.share_embeddings and self.use_uploader):
            self.user_uploader_table = nn.Embed(self.num_uploaders, self.dim, embedding_init=init)
        if not (self.share_embeddings and self.use_tags):
            self.user_tag_table = nn.Embed(self.num_tags, self.dim, embedding_init=init)
        self.experts = Experts(self.num_experts, self.expert_hidden, self.dim, self.dropout)
        if self.gate_hidden > 0:
            self.gate_hidden_layer = nn.Dense(self.gate_hidden)
        self.gate_out = nn.Dense(self.num_experts)
        self.drop = nn.Dropout(self.dropout)
        self.items = ItemEncoder(self.num_items, self.num_uploaders, self.num_tags, self.dim,
                                 self.use_uploader, self.use_tags)
        if self.item_mlp:
            self.item_hidden = nn.Dense(self.expert_hidden)
            self.item_out = nn.Dense(self.dim)

    def encode_items(self, ids, uploader, tags) -> jnp.ndarray:
        """ids [...], uploader [...], tags [..., T] -> video vectors [..., D] (what the index stores)."""
        h = self.items(ids, uploader, tags)  # [..., D]
        if self.item_mlp:
            h = self.item_out(nn.relu(self.item_hidden(h)))
        return l2_normalize(h, _EPS) if self.normalize else h

    def pooled_history(self, batch: dict) -> jnp.ndarray:
        """The three masked-mean pools, concatenated -> x [B, 3D]. Masked positions never count."""
        mask = batch["mask"]  # [B, L]
        uploader, tags = batch["history_uploader"], batch["history_tags"]  # [B, L], [B, L, T]
        b = tags.shape[0]
        share = self.share_embeddings
        embed_v = self.items.id_embedding if share else self.user_item_table
        embed_u = self.items.uploader_embedding if share and self.use_uploader else self.user_uploader_table
        embed_t = self.items.tag_embedding if share and self.use_tags else self.user_tag_table
        p_v = masked_mean(embed_v(batch["history"]), mask)  # [B, D]
        p_u = masked_mean(embed_u(uploader), mask & (uploader > 0))  # [B, D]
        tag_bag = tags.reshape(b, -1)  # [B, L*T]
        tag_ok = (mask[..., None] & (tags > 0)).reshape(b, -1)  # [B, L*T]
        p_t = masked_mean(embed_t(tag_bag), tag_ok)  # [B, D]
        return jnp.concatenate([p_v, p_u, p_t], axis=-1)

    def gate_logits(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.gate_hidden > 0:
            x = nn.relu(self.gate_hidden_layer(x))
        return self.gate_out(x)  # [B, E]

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        x = self.drop(self.pooled_history(batch), deterministic=not train)  # [B, 3D]
        experts = self.experts(x, train)  # [B, E, D]
        if self.normalize:
            experts = l2_normalize(experts, _EPS)
        logits = self.gate_logits(x)  # [B, E]
        gate = nn.softmax(logits, axis=-1)  # [B, E]
        self.sow("intermediates", "expert_out", experts)
        self.sow("intermediates", "gate", gate)
        aux: dict = {"gate": gate, "gate_mass": gate.mean(0)}
        b, e = gate.shape
        if self.aggregation == "gated":
            interests = jnp.einsum("be,bed->bd", gate, experts)[:, None, :]  # [B, 1, D]
            mask = jnp.ones((b, 1), bool)
        else:
            interests = experts
            top = jax.nn.one_hot(jnp.argmax(gate, axis=-1), e, dtype=bool)  # [B, E]
            mask = jnp.ones((b, e), bool) if train else (gate >= self.gate_threshold) | top
        if train:
            penalties = {}
            if self.aggregation == "gated":
                route = gate
            else:
                if "target" not in batch:
                    raise ValueError('MoETwoTower(aggregation="max"): training needs batch["target*"] for routing')
                target = jax.lax.stop_gradient(self.encode_items(
                    batch["target"], batch["target_uploader"], batch["target_tags"]))  # [B, D]
                scores = jnp.einsum("bed,bd->be", experts, target)  # [B, E], as in select_activated
                route = nn.softmax(scores, axis=-1)
                if self.router_weight > 0:
                    activated = jnp.argmax(scores, axis=-1)  # [B]
                    log_g = jax.nn.log_softmax(logits, axis=-1)
                    router = -jnp.take_along_axis(log_g, activated[:, None], axis=-1).mean()
                    penalties["router"] = self.router_weight * router
            self.sow("intermediates", "route", route)
            aux["balance"] = load_balance_loss(route)
            if self.balance_weight > 0:
                penalties["balance"] = self.balance_weight * aux["balance"]
            aux["penalties"] = penalties
        return UserOutput(interests, mask, aux)

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"], batch["target_uploader"], batch["target_tags"])
