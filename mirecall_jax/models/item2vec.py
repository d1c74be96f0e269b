"""item2vec (word2vec over watch sequences), trained by the shared loop; PinnerSage's usual embeddings.

What it is, exactly, inside the shared step (`train/step.py`: user tower -> one interest ->
sampled softmax against the target's item-tower vector):

* Two tables, as in word2vec: `input_embedding` (centre / context vectors, what PinnerSage clusters)
  and `output_embedding` (the item tower, what the target and the sampled negatives are scored with).
* A training example of the shared sampler is (history window, target = the next item). The
  context of the target is the last `window` history items (left context only: pairs are
  (earlier item -> later item), so the model is directional, not word2vec's symmetric window).
* mode "skipgram": the user tower returns the input vector of ONE context item, drawn per example
  with probability proportional to (window - distance + 1); that is the expected pair weight of
  word2vec's dynamic window (window size b ~ U{1..window}, every pair within b trained), so over
  steps each (context, target) pair is trained as often, relatively, as word2vec trains it.
  mode "cbow": the user tower returns the plain mean of the context's input vectors.
* Loss: the shared sampled softmax over `loss.num_negatives` negatives shared by the batch, drawn
  from `loss.negative_sampling` = popularity ** `loss.popularity_alpha` (0.75 is word2vec's noise
  distribution). This is sampled softmax, not word2vec's per-pair logistic NEG loss; with
  `loss.logq_correction = False` it is the unnormalised NEG-style estimator, with True an unbiased
  estimate of the full softmax.
* Frequent-item subsampling (word2vec's t, `model.item2vec.subsample`; 0 = off), done in the tower
  since the sampler draws examples uniformly: every context item and the target are kept with
  probability min(1, sqrt(t / f) + t / f), f = the item's share of training interactions. A dropped
  context item cannot be drawn (skipgram) or pooled (cbow); if the target or every context item is
  dropped, the tower returns the zero vector: all logits are then constant, so the example gives
  exactly zero gradient (it still adds its constant loss log(1 + N) to the reported mean, so the
  logged loss is not comparable across subsample settings).
* Evaluation / serving (train=False): one vector, the pair-weighted mean of the context's input
  vectors. Its score against output(v) is the (weighted) sum of the skip-gram pair logits
  sum_j w_j in(x_j).out(v), i.e. the product of the pair models' unnormalised probabilities.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import embed_init

MODES = ("skipgram", "cbow")


class HostArray:
    """A host numpy constant usable as a Module field: hashed and compared by identity (Modules are
    static jit arguments, so their fields must hash; an ndarray does not)."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def __repr__(self) -> str:
        return f"HostArray(shape={self.array.shape}, dtype={self.array.dtype})"


def keep_probabilities(item_count: np.ndarray, t: float) -> np.ndarray:
    """word2vec's subsampling keep probability per item [I]: min(1, sqrt(t/f) + t/f); 1 where f = 0."""
    count = np.asarray(item_count, np.float64)
    f = count / max(count.sum(), 1.0)
    with np.errstate(divide="ignore"):
        keep = np.where(f > 0, np.sqrt(t / np.maximum(f, 1e-30)) + t / np.maximum(f, 1e-30), 1.0)
    return np.minimum(keep, 1.0).astype(np.float32)


class Item2Vec(nn.Module):
    num_items: int
    dim: int
    window: int = 5  # context = the last `window` history items
    mode: str = "skipgram"  # "skipgram" | "cbow"
    keep_prob: HostArray | None = None  # [num_items] subsampling keep probabilities (None = off)

    def setup(self):
        if self.mode not in MODES:
            raise ValueError(f"config.model.item2vec.mode: expected one of {MODES}, got {self.mode!r}")
        if self.window < 1:
            raise ValueError(f"config.model.item2vec.window must be >= 1, got {self.window}")
        self.input_table = nn.Embed(self.num_items, self.dim, embedding_init=embed_init(self.dim), name="input_embedding")
        self.output_table = nn.Embed(self.num_items, self.dim, embedding_init=embed_init(self.dim), name="output_embedding")

    def encode_items(self, ids, uploader=None, tags=None) -> jnp.ndarray:
        return self.output_table(ids)  # [..., D]

    def _pair_weight(self, w: int) -> jnp.ndarray:
        """[w] weight of each context position, oldest first (distance w .. 1 to the target)."""
        if self.mode == "cbow":
            return jnp.ones((w,), jnp.float32)
        distance = jnp.arange(w, 0, -1)
        return (self.window - distance + 1).astype(jnp.float32)

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        history, mask = batch["history"], batch["mask"].astype(bool)  # [B, L] right-aligned
        L = history.shape[1]
        w = min(self.window, L)
        ctx, ctx_mask = history[:, L - w:], mask[:, L - w:]  # [B, w], most recent last
        h = self.input_table(ctx)  # [B, w, D]
        weight = jnp.where(ctx_mask, self._pair_weight(w)[None, :], 0.0)  # [B, w]
        keep_example = jnp.ones(history.shape[:1], bool)  # [B]
        if train:
            rng = self.make_rng("dropout")
            r_ctx, r_tgt, r_pick = jax.random.split(rng, 3)
            if self.keep_prob is not None:
                keep = jnp.asarray(self.keep_prob.array)  # [I]
                weight = jnp.where(jax.random.uniform(r_ctx, ctx.shape) < keep[ctx], weight, 0.0)
                keep_example = jax.random.uniform(r_tgt, keep_example.shape) < keep[batch["target"]]
            keep_example &= jnp.any(weight > 0, axis=1)
            if self.mode == "skipgram":  # one pair per example, drawn proportionally to its weight
                logits = jnp.where(weight > 0, jnp.log(jnp.maximum(weight, 1e-30)), -jnp.inf)
                pick = jnp.argmax(logits + jax.random.gumbel(r_pick, logits.shape), axis=1)  # [B]
                user = jnp.take_along_axis(h, pick[:, None, None], axis=1)[:, 0]  # [B, D]
            else:
                user = (h * weight[..., None]).sum(1) / jnp.maximum(weight.sum(1, keepdims=True), 1e-30)
            user = user * keep_example[:, None]  # dropped example: zero vector, zero gradient
        else:
            user = (h * weight[..., None]).sum(1) / jnp.maximum(weight.sum(1, keepdims=True), 1e-30)
        return UserOutput(user[:, None, :], jnp.ones((user.shape[0], 1), bool), {})  # [B, 1, D]

    def __call__(self, batch: dict, train: bool = False):
        """Touches every parameter once (used by `init`)."""
        return self.encode_users(batch, train), self.encode_items(batch["target"])


def build_item2vec(model_cfg, dataset) -> Item2Vec:
    """FAMILIES entry: reads model.embed_dim and model.item2vec.{mode, window, subsample}."""
    ic = model_cfg.item2vec
    keep = HostArray(keep_probabilities(dataset.item_count, ic.subsample)) if ic.subsample > 0 else None
    return Item2Vec(num_items=dataset.num_items, dim=model_cfg.embed_dim, window=int(ic.window), mode=ic.mode,
                    keep_prob=keep)
