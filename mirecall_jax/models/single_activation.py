"""Single-activation transformer user tower (design.md, family 3).

Input per history position l (each side feature switchable, see layers.ItemEncoder):
  x_l = Dense_D( concat(E_item[v_l], E_uploader[u_l] * [u_l > 0], masked_mean_t E_tag[t_lt]) ) + P_l
with learned position embeddings P (aligned on the most recent item). A pre-LN transformer encoder
  x <- x + Drop(MHA(LN(x)))   (key padding mask: padded positions are never attended)
  x <- x + Drop(MLP(LN(x)))
then a final LN gives H [B, L, D]. Read-out to K interests:
  "queries":   K learned query tokens Q [K, D] cross-attend over H (multi-head, key padding mask);
               head outputs are merged per query, so interest k depends on query k only.
  "attentive": ComiRec-style A = softmax_L(W2 tanh(W1 H^T)), interests = A V (comirec_sa.py).
The values V are H itself (readout_values="encoded") or the watched videos' id embeddings
(readout_values="ids": the encoder and the side features decide *where* to look, each interest is a
convex combination of watched videos in the space the loss and the index score). Optionally a
shared Dense projection to D follows (readout_projection). aux["attention"] = A [B, K, L] (head-averaged for
"queries"), the input of the attention-overlap regulariser.

The train step activates only the interest closest to the target (step.select_activated) and
trains it with sampled softmax over *video-id* embeddings, so `encode_items` is the id table of the
same ItemEncoder that embeds the history (one table, shared by input and output sides), and the ANN
index holds ids only. `mask` is all True: pruning of rarely activated interests happens at inference
(capacity.py). Disagreement terms: regularizers.py (weighted in aux["penalties"], raw in
aux["disagreement"]).
"""

from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from mirecall_jax.models import regularizers
from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import AttentivePooling, ItemEncoder, PositionEmbedding, embed_init, masked_softmax

READOUTS = ("queries", "attentive")
READOUT_VALUES = ("encoded", "ids")


class EncoderBlock(nn.Module):
    """One pre-LN transformer layer. x [B, L, D], mask [B, L] -> [B, L, D].

    The output projections of both residual branches start at zero, so a fresh block is the
    identity: the read-out first sees the position-tagged item representations (what ComiRec-SA
    attends over) and context is mixed in only as far as training finds it useful. With random
    output projections every key starts as a random mixture of the sequence's topics.
    """

    num_heads: int
    mlp_dim: int
    dropout: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool) -> jnp.ndarray:
        det = not train
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout, deterministic=det,
                                            out_kernel_init=nn.initializers.zeros)(y, y, mask=mask[:, None, None, :])
        x = x + nn.Dropout(self.dropout)(y, deterministic=det)
        y = nn.LayerNorm()(x)
        y = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.gelu(nn.Dense(self.mlp_dim)(y)))
        return x + nn.Dropout(self.dropout)(y, deterministic=det)


class QueryReadout(nn.Module):
    """K learned queries attend over keys [B, L, D], pool values [B, L, D'] -> ([B, K, D], attention [B, K, L])."""

    num_interests: int
    num_heads: int

    @nn.compact
    def __call__(self, h: jnp.ndarray, values: jnp.ndarray, mask: jnp.ndarray):
        dim = h.shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {self.num_heads}")
        head_dim = dim // self.num_heads
        queries = self.param("queries", embed_init(dim), (self.num_interests, dim))  # [K, D]
        proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), name=name)  # noqa: E731
        q = proj("query")(queries)  # [K, H, dh]
        k, v = proj("key")(h), proj("value")(values)  # [B, L, H, dh]
        logits = jnp.einsum("khd,blhd->bhkl", q, k) * head_dim**-0.5  # [B, H, K, L]
        weights = masked_softmax(logits, mask[:, None, None, :])  # [B, H, K, L]
        out = jnp.einsum("bhkl,blhd->bkhd", weights, v)  # [B, K, H, dh]
        out = nn.DenseGeneral(dim, axis=(-2, -1), name="out")(out)  # [B, K, D]
        return out, weights.mean(1)


class SingleActivation(nn.Module):
    num_items: int
    num_uploaders: int
    num_tags: int
    dim: int
    num_interests: int = 4
    max_len: int = 50
    num_layers: int = 2
    num_heads: int = 2
    mlp_dim: int | None = None  # transformer MLP width; None -> 4 * dim
    dropout: float = 0.1
    use_uploader: bool = True
    use_tags: bool = True
    readout: str = "queries"  # "queries" | "attentive"
    # What the read-out pools: "encoded" = the transformer outputs H; "ids" = the watched videos'
    # id embeddings, with attention weights still computed from H. Pooling ids keeps each interest
    # a mixture of actual watched videos in the scored space (as ComiRec-SA does), where
    # contextualised outputs blend neighbouring topics into every position.
    readout_values: str = "encoded"
    # A final Dense on the pooled vectors (off with "ids": the pooled vectors are already in the
    # id-embedding space the loss scores).
    readout_projection: bool = True
    cos_weight: float = 0.0  # weight of mean |cos| between interests
    orth_weight: float = 0.0  # weight of ||N N^T - I||_F^2
    attn_weight: float = 0.0  # weight of ||A A^T - I||_F^2 on the read-out attention

    def setup(self):
        if self.readout not in READOUTS:
            raise ValueError(f"readout: expected one of {READOUTS}, got {self.readout!r}")
        if self.readout_values not in READOUT_VALUES:
            raise ValueError(f"readout_values: expected one of {READOUT_VALUES}, got {self.readout_values!r}")
        self.items = ItemEncoder(self.num_items, self.num_uploaders, self.num_tags, self.dim,
                                 self.use_uploader, self.use_tags)
        self.positions = PositionEmbedding(self.max_len, self.dim)
        self.input_drop = nn.Dropout(self.dropout)
        mlp_dim = self.mlp_dim or 4 * self.dim
        self.blocks = [EncoderBlock(self.num_heads, mlp_dim, self.dropout, name=f"block_{i}")
                       for i in range(self.num_layers)]
        self.final_norm = nn.LayerNorm()
        if self.readout == "queries":
            self.pool = QueryReadout(self.num_interests, self.num_heads)
        else:
            self.pool = AttentivePooling(self.num_interests, 4 * self.dim)
        if self.readout_projection:
            self.project = nn.Dense(self.dim)

    def encode_items(self, ids, uploader=None, tags=None) -> jnp.ndarray:
        """Video-id embedding only (negatives and the ANN index never use side features)."""
        return self.items.id_embedding(ids)  # [..., D]

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        mask = batch["mask"]  # [B, L]
        inputs = self.items(batch["history"], batch["history_uploader"], batch["history_tags"])  # [B, L, D]
        x = self.input_drop(self.positions(inputs), deterministic=not train)
        for block in self.blocks:
            x = block(x, mask, train)
        h = self.final_norm(x)  # [B, L, D]
        values = h if self.readout_values == "encoded" else self.items.id_embedding(batch["history"])  # [B, L, D]
        pooled, attention = self.pool(h, values, mask)  # [B, K, D], [B, K, L]
        interests = self.project(pooled) if self.readout_projection else pooled  # [B, K, D]
        raw = regularizers.disagreement(interests, attention)
        weights = {"cos": self.cos_weight, "orth": self.orth_weight, "attn": self.attn_weight}
        aux = {"attention": attention, "disagreement": raw, "penalties": regularizers.penalties(raw, weights)}
        return UserOutput(interests, jnp.ones(interests.shape[:2], bool), aux)

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"])
