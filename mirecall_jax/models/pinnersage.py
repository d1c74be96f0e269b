"""PinnerSage as a recall family: Ward clusters of the history's embeddings, medoids as interests.

No user tower is trained. The only parameter is a frozen item table `item_embedding` [I, D]
(initialised to zeros; `pinnersage.run` fills it from item2vec, another family's item tower or an
external array and saves it as the workdir's checkpoint), so evaluation, the evaluate CLI and
export see a normal family:

  encode_items(ids)      = item_embedding[ids]                                    [..., D]
  encode_users(batch)    = per user: embeddings of the history [L, D] -> Ward flat clusters cut at
                           `ward_threshold` (at most `max_clusters`) -> medoid per cluster ->
                           importance sum_members exp(-lambda * age) -> the K most important
                           medoids ("top") or K drawn by importance ("sample") -> interests [B, K, D],
                           mask [B, K] (False where the user has fewer than K clusters).

With `cluster_on_unit`, Ward and the medoids see the L2-normalised rows (cosine geometry, so the
threshold means the same for any table scale) while the interests are the medoids' raw rows, so
retrieval keeps the dot product (and whatever popularity the norms carry). The raw row is found as
the first history member whose unit row equals the unit medoid (exact: it is a copy of it; items
whose rows are positive multiples of each other are interchangeable there).

Ages: with `time_unit_seconds` > 0, (time of the user's last history item - item time) in that
unit, from batch["history_time"] (int timestamps; under default 32-bit JAX they wrap, but the
difference is exact while the window spans < 2^31 time units of the source); with 0, the number
of history items watched after it (0 for the last). Sampling is deterministic per user: the key is
fold_in(seed, user) (or a hash of the history when the batch has no "user", as in serving).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirecall_jax.models.base import UserOutput
from mirecall_jax.models.layers import l2_normalize
from mirecall_jax.pinnersage import cluster_users, select_interests

SELECTIONS = ("top", "sample")


class PinnerSage(nn.Module):
    num_items: int
    dim: int
    num_interests: int = 4  # K medoids queried per user
    ward_threshold: float = 1.0  # Ward tree cut height (scipy units)
    max_clusters: int = 0  # at most this many clusters per user (0 = no cap)
    importance_lambda: float = 0.1  # importance = sum exp(-lambda * age)
    time_unit_seconds: float = 0.0  # > 0: ages from history_time in this unit; 0: ages in actions
    selection: str = "top"  # "top" | "sample"
    cluster_on_unit: bool = False  # Ward + medoids on L2-normalised rows; interests are the raw rows
    distances: str = "gram"  # Ward pairwise distances, see pinnersage/ward.py
    chunk: int = 256  # users per Ward chunk
    seed: int = 0  # "sample": key = fold_in(PRNGKey(seed), user) (model.pinnersage.sample_seed)

    def setup(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"config.model.pinnersage.selection: expected one of {SELECTIONS}, got {self.selection!r}")
        if self.max_clusters < 0:
            raise ValueError(f"config.model.pinnersage.max_clusters must be >= 0 (0 = no cap), got {self.max_clusters}")
        # Frozen: filled from the source table by pinnersage.run, never trained.
        self.table = self.param("item_embedding", nn.initializers.zeros, (self.num_items, self.dim), jnp.float32)

    def encode_items(self, ids, uploader=None, tags=None) -> jnp.ndarray:
        return jnp.take(self.table, ids, axis=0)  # [..., D]

    def ages(self, batch: dict) -> jnp.ndarray:
        """Age of every history position [B, L] float32 (0 on padding)."""
        mask = batch["mask"].astype(bool)  # [B, L]
        if self.time_unit_seconds > 0:
            if "history_time" not in batch:
                raise ValueError(
                    "PinnerSage with model.pinnersage.time_unit_seconds > 0 needs batch['history_time']: the "
                    "caller must pass it (evaluate.py: 'history_time' in MODEL_INPUTS and "
                    "eval_batches(..., with_timestamps=True)); or set time_unit_seconds = 0 (ages in actions)")
            t = batch["history_time"]  # [B, L] int
            L = mask.shape[1]
            last_pos = L - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # [B] position of the last valid item
            last = jnp.take_along_axis(t, last_pos[:, None], axis=1)  # [B, 1]
            age = (last - t).astype(jnp.float32) / jnp.float32(self.time_unit_seconds)  # wrap-safe difference
            age = jnp.maximum(age, 0.0)
        else:
            later = jnp.cumsum(mask[:, ::-1].astype(jnp.int32), axis=1)[:, ::-1]  # valid items at or after i
            age = (later - 1).astype(jnp.float32)
        return jnp.where(mask, age, 0.0)

    def _sample_keys(self, batch: dict) -> jax.Array:
        if "user" in batch:
            ident = batch["user"].astype(jnp.int32)
        else:  # serving: no user index, so derive the key from the history itself
            h = batch["history"].astype(jnp.int32)
            ident = jnp.sum(h * (jnp.arange(h.shape[1], dtype=jnp.int32) * 7919 + 1), axis=1)
        base = jax.random.PRNGKey(self.seed)
        return jax.vmap(lambda u: jax.random.fold_in(base, u))(ident)  # [B] keys

    def encode_users(self, batch: dict, train: bool = False) -> UserOutput:
        if train:
            raise ValueError("PinnerSage has no user tower to train: run it with mirecall_jax.pinnersage.run "
                             "(evaluate_pinnersage), which loads the embedding table and evaluates it")
        mask = batch["mask"].astype(bool)  # [B, L]
        raw = self.encode_items(batch["history"])  # [B, L, D]
        emb = raw
        if self.cluster_on_unit:  # cosine geometry for Ward and the medoids
            emb = l2_normalize(raw, 1e-12)
        L = mask.shape[1]
        cap = self.max_clusters or None
        M = min(self.max_clusters or L, L)
        labels = cluster_users(emb, mask, self.ward_threshold, cap, chunk=self.chunk, distances=self.distances)  # [B, L]
        ages = self.ages(batch)
        lam, K = self.importance_lambda, self.num_interests
        if self.selection == "top":
            interests, valid = select_interests(emb, labels, ages, lam, K, "top", max_clusters=M)
        else:
            def one(e, lab, a, key):  # per-user key: draws do not depend on the batch a user is in
                i, v = select_interests(e[None], lab[None], a[None], lam, K, "sample", key, max_clusters=M)
                return i[0], v[0]

            interests, valid = jax.vmap(one)(emb, labels, ages, self._sample_keys(batch))
        if self.cluster_on_unit:  # back to the raw row: the (first) member whose unit row is the medoid
            d2 = jnp.sum(jnp.square(interests[:, :, None, :] - emb[:, None, :, :]), axis=-1)  # [B, K, L]
            pos = jnp.argmin(jnp.where(mask[:, None, :], d2, jnp.inf), axis=-1)  # [B, K]; d2 = 0 there
            interests = jnp.where(valid[..., None], jnp.take_along_axis(raw, pos[..., None], axis=1), 0.0)
        num_clusters = jnp.max(labels, axis=1) + 1  # [B]
        return UserOutput(interests, valid, {"labels": labels, "num_clusters": num_clusters})

    def __call__(self, batch: dict, train: bool = False):
        """Touches the table (init); no clustering, so init stays cheap."""
        return self.encode_items(batch["target"])


def build_pinnersage(model_cfg, dataset) -> PinnerSage:
    """FAMILIES entry: model.{embed_dim, num_interests} and model.pinnersage.* (pinnersage/config.py)."""
    p = model_cfg.pinnersage
    return PinnerSage(num_items=dataset.num_items, dim=model_cfg.embed_dim, num_interests=int(model_cfg.num_interests),
                      ward_threshold=float(p.ward_threshold), max_clusters=int(p.max_clusters),
                      importance_lambda=float(p.importance_lambda), time_unit_seconds=float(p.time_unit_seconds),
                      selection=p.selection, cluster_on_unit=bool(p.cluster_on_unit), distances=p.distances,
                      chunk=int(p.chunk), seed=int(p.sample_seed))
