"""Multi-interest retrieval from a serving artifact: histories -> K interests -> ANN -> merge -> top n.

    r = Retriever.load("artifact/")
    recs = r.recommend([["v12", "v7", "v3"], []], n=20)  # merge: the artifact's eval.merge unless given
    recs[0].items, recs[0].scores, recs[0].interests, recs[1].fallback

Per call: external ids are mapped to item indices (unknown ids are counted and ignored), the last
`max_len` known items of each history form the encoder input exactly as the training sampler builds
it (`data/sampler.gather_windows`: most recent item at position L-1, left padding 0, uploader /
tags from the side tables), one call of the exported encoder encodes all users (batch padded to a
power of two so only a few shapes are ever compiled), one batched ScaNN call retrieves the top k
items of every valid interest of every user, and the per-interest lists are merged (merge.py; by
default the rule the model was evaluated with, `eval.merge` of its training config; the "mixture"
merge weighs interests by their share of the encoded history window, as the evaluation does for
users without activation records, and normalises each interest over the whole catalogue: an exact
O(M * D) pass per interest, as costly as brute-force search, so large catalogues serve "score").
Each interest's list is k = n deep, n + the number of distinct seen items with exclude_seen (every
known item of the request's history, not only the last L, is then removed before merging, so n
unseen items remain); requests served together are searched at the largest k and cut back to their
own, so an answer never depends on the batch it was computed in.
A history with no known item falls back to the most popular training items (flagged `fallback`;
scores are then popularity counts and interests -1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from mirecall_jax import metrics
from mirecall_jax.models import capacity
from mirecall_jax.serving import artifact as art
from mirecall_jax.serving import merge as merge_lib
from mirecall_jax.serving.encoder import ENCODER_INPUTS, encoder_inputs, load_encoder
from mirecall_jax.serving.index import ItemIndex

MAX_ENCODE_BATCH = 512  # users per encoder call (larger requests are split)


@dataclasses.dataclass
class Request:
    history: Sequence  # external item ids, oldest first
    n: int = 50
    exclude_seen: bool = True
    merge: str | None = None  # None: the artifact's default (Retriever.default_merge)
    diversity_lambda: float = 0.0


@dataclasses.dataclass
class Recommendation:
    items: list  # external ids, best first
    item_indices: list  # item indices into the artifact's vocabulary
    scores: list  # inner products; "mixture": log mixture probabilities (popularity counts when fallback)
    interests: list  # the interest slot that retrieved each item (-1 when fallback)
    fallback: bool  # True: no known history item, popular items returned
    history_length: int  # ids received
    unknown_items: int  # ids not in the vocabulary (ignored)
    history_used: int  # known items fed to the encoder (<= max_len)
    truncated: int  # known items older than the last max_len, not encoded (still excluded when seen)
    num_interests: int  # valid interests queried

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bucket(b: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(b, 1))))


class Retriever:
    def __init__(self, directory: str, manifest: dict, *, item_ids, embeddings, side: dict, index: ItemIndex,
                 encode_call, constants):
        self.directory, self.manifest = directory, manifest
        self.item_ids = item_ids  # [M] external ids (index 0 = "")
        self.id_to_index = {s: i for i, s in enumerate(item_ids) if i > 0}
        self.embeddings = embeddings  # [M, D] (memory-mapped)
        self.side = side
        self.index = index
        self._call, self._constants = encode_call, constants
        self.max_len = int(manifest["max_len"])
        self.num_interests = int(manifest["num_interests"])
        self.num_items = int(manifest["num_items"])
        config = manifest.get("config") or {}
        evaluation = config.get("eval", {})
        # The merge the model was evaluated with ("score" for artifacts exported before eval.merge, and
        # for "auto" left unresolved by a run that did not finish).
        self.default_merge = evaluation.get("merge", "score")
        if self.default_merge not in merge_lib.MERGES:
            self.default_merge = "score"
        self.mixture_uniform = float(evaluation.get("mixture_uniform", 0.1))
        self.temperature = float(config.get("loss", {}).get("temperature", 1.0))
        self._device_embeddings = None  # device copy of the embeddings, made for the first "mixture" request
        count = np.asarray(side["item_count"], np.int64).copy()
        count[0] = -1
        self.popular = np.argsort(-count, kind="stable")[: self.num_items]  # item indices, most popular first

    # ---- loading ----
    @classmethod
    def load(cls, directory: str, *, verify: bool = True) -> "Retriever":
        """Load and check an artifact; raises artifact.ArtifactError if it is corrupt or incomplete."""
        directory = os.path.abspath(directory)
        manifest = art.read_manifest(directory, verify=verify)
        try:
            with open(os.path.join(directory, "item_ids.json")) as fh:
                item_ids = json.load(fh)
            embeddings = np.load(os.path.join(directory, "item_embeddings.npy"), mmap_mode="r", allow_pickle=False)
            with np.load(os.path.join(directory, "side_tables.npz"), allow_pickle=False) as z:
                side = {k: z[k] for k in z.files}
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise art.ArtifactError(f"{directory}: unreadable artifact file ({e})") from e
        rows, dim = int(manifest["vocab_size"]), int(manifest["embed_dim"])
        problems = []
        if embeddings.shape != (rows, dim) or embeddings.dtype != np.float32:
            problems.append(f"item_embeddings.npy is {embeddings.shape} {embeddings.dtype}, manifest says "
                            f"({rows}, {dim}) float32")
        if not isinstance(item_ids, list) or len(item_ids) != rows:
            problems.append(f"item_ids.json has {len(item_ids) if isinstance(item_ids, list) else '?'} ids, "
                            f"expected {rows}")
        for key in ("item_uploader", "item_tags", "item_category", "item_count"):
            if key not in side or side[key].shape[0] != rows:
                problems.append(f"side_tables.npz[{key!r}] missing or not {rows} rows")
        if "item_tags" in side and side["item_tags"].ndim == 2 and side["item_tags"].shape[1] != manifest["max_tags"]:
            problems.append(f"side_tables.npz['item_tags'] has {side['item_tags'].shape[1]} tags per item, "
                            f"manifest says {manifest['max_tags']}")
        if manifest["index"].get("num_items") != manifest["num_items"]:
            problems.append("index and catalogue sizes differ")
        if problems:
            raise art.ArtifactError(f"{directory}: inconsistent artifact: " + "; ".join(problems))
        try:
            call, constants = load_encoder(os.path.join(directory, "encoder"))
            index = ItemIndex.load(os.path.join(directory, "index"), manifest["index"])
        except Exception as e:  # noqa: BLE001 - any failure here means the artifact cannot serve
            raise art.ArtifactError(f"{directory}: cannot load the encoder or index ({type(e).__name__}: {e})") from e
        if index.searcher.size() != manifest["num_items"]:
            raise art.ArtifactError(f"{directory}: index holds {index.searcher.size()} items, "
                                    f"manifest says {manifest['num_items']}")
        import jax

        constants = [jax.device_put(c) for c in constants]
        return cls(directory, manifest, item_ids=item_ids, embeddings=embeddings, side=side, index=index,
                   encode_call=call, constants=constants)

    def warmup(self, max_batch: int = 64) -> None:
        """Compile the encoder for every batch bucket up to max_batch (first requests stay fast)."""
        b = 1
        while b <= _bucket(max_batch):
            self._encode_rows([np.array([1], np.int64)] * b)
            b *= 2

    # ---- encoding ----
    def _to_indices(self, history: Sequence) -> tuple[np.ndarray, int]:
        known = [self.id_to_index.get(str(x)) for x in history]
        idx = np.asarray([i for i in known if i is not None], np.int64)
        return idx, len(known) - len(idx)

    def _encode_rows(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Item-index histories (non-empty) -> (interests [B, K, D], valid [B, K]), in padded batches."""
        outs, valids = [], []
        for lo in range(0, len(rows), MAX_ENCODE_BATCH):
            part = rows[lo:lo + MAX_ENCODE_BATCH]
            padded = part + [part[0]] * (_bucket(len(part)) - len(part))  # copies of a real row, dropped below
            x = encoder_inputs(padded, self.max_len, self.side["item_uploader"], self.side["item_tags"])
            interests, valid = self._call(self._constants, *(x[k] for k in ENCODER_INPUTS))
            outs.append(np.asarray(interests, np.float32)[: len(part)])
            valids.append(np.asarray(valid, bool)[: len(part)])
        return np.concatenate(outs), np.concatenate(valids)

    def encode(self, histories: Sequence[Sequence]) -> tuple[np.ndarray, np.ndarray]:
        """External-id histories -> (interests [B, K, D], valid [B, K]); rows with no known item are all invalid."""
        idx = [self._to_indices(h)[0] for h in histories]
        interests = np.zeros((len(idx), self.num_interests, int(self.manifest["embed_dim"])), np.float32)
        valid = np.zeros((len(idx), self.num_interests), bool)
        live = [i for i, h in enumerate(idx) if h.size]
        if live:
            interests[live], valid[live] = self._encode_rows([idx[i][-self.max_len:] for i in live])
        return interests, valid

    # ---- recommending ----
    def recommend(self, histories: Sequence[Sequence], n: int = 50, *, exclude_seen: bool = True,
                  merge: str | None = None, diversity_lambda: float = 0.0) -> list[Recommendation]:
        reqs = [Request(h, n, exclude_seen, merge, diversity_lambda) for h in histories]
        return self.recommend_requests(reqs)

    def _check(self, r: Request) -> None:
        if isinstance(r.history, (str, bytes)):
            raise TypeError("history must be a sequence of item ids, not a string")
        if isinstance(r.n, bool) or not isinstance(r.n, (int, np.integer)) or r.n < 1:
            raise ValueError(f"n must be a positive integer, got {r.n!r}")
        if r.merge is not None and r.merge not in merge_lib.MERGES:
            raise ValueError(f"merge must be one of {merge_lib.MERGES}, got {r.merge!r}")
        lam = float(r.diversity_lambda)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"diversity_lambda must be a finite number >= 0, got {r.diversity_lambda!r}")

    def recommend_requests(self, requests: Sequence[Request]) -> list[Recommendation]:
        """Serve many requests (each with its own n / merge / lambda) with one encoder and one ScaNN call."""
        for r in requests:
            self._check(r)
        merges = [r.merge or self.default_merge for r in requests]
        known, unknown = zip(*(self._to_indices(r.history) for r in requests)) if requests else ((), ())
        ns = [min(int(r.n), self.num_items) for r in requests]
        seen = [np.unique(k) if r.exclude_seen else np.zeros(0, np.int64) for k, r in zip(known, requests)]
        live = [i for i, k in enumerate(known) if k.size]
        results: list[Recommendation | None] = [None] * len(requests)

        if live:
            windows = [known[i][-self.max_len:] for i in live]
            interests, valid = self._encode_rows(windows)
            share = log_z = None
            if any(merges[i] == "mixture" for i in live):
                share, log_z = self._mixture_inputs(windows, interests, valid)
            k = min(max(ns[i] + seen[i].size for i in live), self.num_items)
            scores, ids = self.index.search(interests[valid], k)  # one ANN call for every valid interest
            all_s = np.full(valid.shape + (k,), -np.inf, np.float32)
            all_i = np.zeros(valid.shape + (k,), np.int32)
            all_s[valid], all_i[valid] = scores, ids
            for row, i in enumerate(live):
                own_k = min(ns[i] + seen[i].size, self.num_items)  # each request sees its own depth, so
                all_s[row, :, own_k:] = -np.inf  # its answer does not depend on the batch it came in
                if seen[i].size:  # drop seen items
                    all_s[row] = np.where(np.isin(all_i[row], seen[i]), -np.inf, all_s[row])
            groups: dict[tuple, list[int]] = {}
            for row, i in enumerate(live):
                r = requests[i]
                key = (merges[i], ns[i], float(r.diversity_lambda) if merges[i] == "diversity" else 0.0)
                groups.setdefault(key, []).append(row)
            for (name, n, lam), rows in groups.items():
                out_i, out_s, out_k = merge_lib.merge(
                    name, all_s[rows], all_i[rows], valid[rows], n, item_category=self.side["item_category"],
                    diversity_lambda=lam, share=None if share is None else share[rows],
                    log_z=None if log_z is None else log_z[rows],
                    mixture_uniform=self.mixture_uniform, temperature=self.temperature)
                for j, row in enumerate(rows):
                    i = live[row]
                    keep = out_i[j] > 0
                    results[i] = self._result(requests[i], known[i], unknown[i], out_i[j][keep], out_s[j][keep],
                                              out_k[j][keep], fallback=False, num_interests=int(valid[row].sum()))
        for i, r in enumerate(requests):
            if results[i] is None:  # no known item: popular items, minus seen (none are known)
                top = self.popular[~np.isin(self.popular, seen[i])][: ns[i]] if seen[i].size else self.popular[: ns[i]]
                results[i] = self._result(r, known[i], unknown[i], top, self.side["item_count"][top].astype(np.float64),
                                          np.full(len(top), -1), fallback=True, num_interests=0)
        return results

    def _mixture_inputs(self, windows: list[np.ndarray], interests: np.ndarray, valid: np.ndarray):
        """What the mixture merge needs: each interest's share of the encoded window [B, K] (as the
        evaluation computes it for users without activation records) and its log-partition over the
        catalogue [B, K] (exact: one O(M * D) pass per interest)."""
        hist = np.zeros((len(windows), self.max_len), np.int64)  # [B, L]
        for row, w in enumerate(windows):
            hist[row, : len(w)] = w
        share = capacity.history_share(interests, valid, np.asarray(self.embeddings[hist]), hist > 0)
        if self._device_embeddings is None:
            import jax.numpy as jnp

            self._device_embeddings = jnp.asarray(self.embeddings)
        b, num_k, d = interests.shape
        log_z = metrics.log_partition(interests.reshape(b * num_k, d), self._device_embeddings, self.temperature)
        return share, log_z.reshape(b, num_k)

    def _result(self, r, known, unknown, ids, scores, interests, *, fallback, num_interests) -> Recommendation:
        used = min(len(known), self.max_len)
        return Recommendation(
            items=[self.item_ids[int(i)] for i in ids], item_indices=[int(i) for i in ids],
            scores=[float(s) for s in scores], interests=[int(k) for k in interests], fallback=fallback,
            history_length=len(r.history), unknown_items=int(unknown), history_used=int(used),
            truncated=int(len(known) - used), num_interests=num_interests)
