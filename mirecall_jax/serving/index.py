"""The ScaNN index over the item embeddings: parameter rule, build, serialize / load, recall.

Retrieval is maximum inner product ("dot_product"), the score the models are trained with. The
index holds items 1..M-1 (row 0 of the embedding matrix is padding and is never indexed), so index
position p is item index p + 1; `ItemIndex.search` returns item indices, never positions.

Parameters follow ScaNN's own guidance (scann/docs/algorithms.md), from the number n of indexed items:
  n <  20,000    brute force (exact float32 dot products)
  n < 100,000    asymmetric hashing (AH, 2 dims per block, anisotropic threshold 0.2) + exact reorder
  otherwise      k-means tree (num_leaves ~ sqrt(n)) + AH + exact reorder
Every field of `index_config()` can be set to override the rule (0 / "auto" = use the rule);
`resolve_params` turns the config into the concrete parameters the artifact records.
"""

from __future__ import annotations

import math
import os
import time

import jax.numpy as jnp
import ml_collections
import numpy as np

from mirecall_jax import metrics

BRUTE_FORCE_MAX = 20_000  # below this many items: brute force
AH_MAX = 100_000  # below this many items: AH + reorder without partitioning
KINDS = ("brute_force", "ah", "tree_ah")


def index_config() -> ml_collections.ConfigDict:
    """Index build / search parameters; 0 or "auto" means "from the catalogue size" (module docstring)."""
    c = ml_collections.ConfigDict()
    c.kind = "auto"  # "auto" | "brute_force" | "ah" | "tree_ah"
    c.num_leaves = 0  # tree: k-means partitions (0 = round(sqrt(n)))
    c.num_leaves_to_search = 0  # tree: partitions searched per query (0 = max(32, num_leaves // 8))
    c.training_sample_size = 0  # tree / AH training sample (0 = min(n, 250,000))
    c.dimensions_per_block = 2  # AH: dimensions per sub-quantizer (ScaNN recommends 2)
    c.anisotropic_quantization_threshold = 0.2  # AH: score-aware quantization for dot products
    c.reorder_num_neighbors = 0  # candidates rescored exactly (0 = 500; raised to 2k for a k-NN query)
    c.training_threads = 0  # 0 = all cores
    return c


def resolve_params(num_items: int, dim: int, overrides=None) -> dict:
    """Concrete build parameters for `num_items` indexed vectors of size `dim` (module docstring)."""
    cfg = index_config()
    if overrides:
        cfg.update(dict(overrides))
    n = int(num_items)
    if n < 1:
        raise ValueError(f"cannot index an empty catalogue (num_items={n})")
    kind = cfg.kind
    if kind == "auto":
        kind = "brute_force" if n < BRUTE_FORCE_MAX else "ah" if n < AH_MAX else "tree_ah"
    if kind not in KINDS:
        raise ValueError(f"index.kind: expected 'auto' or one of {KINDS}, got {cfg.kind!r}")
    params = {"kind": kind, "num_items": n, "dim": int(dim), "distance": "dot_product",
              "training_threads": int(cfg.training_threads)}
    if kind == "brute_force":
        return params
    params.update(
        dimensions_per_block=int(cfg.dimensions_per_block),
        anisotropic_quantization_threshold=float(cfg.anisotropic_quantization_threshold),
        training_sample_size=int(cfg.training_sample_size or min(n, 250_000)),
        reorder_num_neighbors=int(cfg.reorder_num_neighbors or 500),
    )
    if kind == "tree_ah":
        leaves = int(cfg.num_leaves or max(2, round(math.sqrt(n))))
        leaves = min(leaves, n)
        search = int(cfg.num_leaves_to_search or max(32, leaves // 8))
        params.update(num_leaves=leaves, num_leaves_to_search=min(search, leaves))
    return params


def _scann():
    from scann.scann_ops.py import scann_ops_pybind  # imported lazily: loading ScaNN is slow-ish

    return scann_ops_pybind


class ItemIndex:
    """A ScaNN searcher over items 1..M-1 plus the parameters it was built with."""

    def __init__(self, searcher, params: dict):
        self.searcher = searcher
        self.params = params

    @property
    def num_items(self) -> int:
        return int(self.params["num_items"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] -> (scores [Q, k] float32, ids [Q, k] int32 item indices), best first.

        One batched ScaNN call (multi-threaded for large batches). Slots ScaNN cannot fill (k larger
        than the catalogue) come back as (-inf, 0), the convention of `metrics.chunked_top_k`.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(k)
        if queries.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
        kind = self.params["kind"]
        pre = max(int(self.params["reorder_num_neighbors"]), 2 * k) if kind != "brute_force" else None
        leaves = int(self.params["num_leaves_to_search"]) if kind == "tree_ah" else None
        search = self.searcher.search_batched_parallel if queries.shape[0] >= 64 else self.searcher.search_batched
        pos, dist = search(queries, final_num_neighbors=k, pre_reorder_num_neighbors=pre, leaves_to_search=leaves)
        pos = np.asarray(pos, np.int64)
        dist = np.asarray(dist, np.float32)
        if pos.shape[1] < k:  # ScaNN may return fewer columns than asked
            pad = k - pos.shape[1]
            pos = np.pad(pos, ((0, 0), (0, pad)))
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.nan)
        missing = ~np.isfinite(dist) | (pos < 0) | (pos >= self.num_items)
        ids = np.where(missing, 0, pos + 1).astype(np.int32)  # position p <-> item p + 1
        scores = np.where(missing, -np.inf, dist).astype(np.float32)
        return scores, ids

    def save(self, directory: str) -> None:
        """Serialize with relative asset paths, so the directory can be moved or copied."""
        os.makedirs(directory, exist_ok=True)
        self.searcher.serialize(os.path.abspath(directory), relative_path=True)

    @classmethod
    def load(cls, directory: str, params: dict) -> "ItemIndex":
        assets = os.path.join(directory, "scann_assets.pbtxt")
        if not os.path.isfile(assets):  # ScaNN's own loader would try to rebuild it from old-format files
            raise FileNotFoundError(f"{assets}: missing; not a ScaNN index directory")
        return cls(_scann().load_searcher(os.path.abspath(directory), assets_backcompat_shim=False), params)


def build_index(vectors: np.ndarray, params: dict) -> tuple[ItemIndex, float]:
    """Build the searcher over `vectors` [n, D] (items 1..n, i.e. the embedding matrix without row 0).

    Returns (index, build seconds). `params` comes from `resolve_params`.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n != params["num_items"] or dim != params["dim"]:
        raise ValueError(f"index params are for {params['num_items']} x {params['dim']}, vectors are {n} x {dim}")
    t0 = time.perf_counter()
    builder = _scann().builder(vectors, 10, "dot_product")
    builder.set_n_training_threads(params["training_threads"])
    kind = params["kind"]
    if kind == "brute_force":
        builder = builder.score_brute_force()
    else:
        if kind == "tree_ah":
            builder = builder.tree(num_leaves=params["num_leaves"], num_leaves_to_search=params["num_leaves_to_search"],
                                   training_sample_size=params["training_sample_size"])
        builder = builder.score_ah(params["dimensions_per_block"],
                                   anisotropic_quantization_threshold=params["anisotropic_quantization_threshold"],
                                   training_sample_size=params["training_sample_size"])
        builder = builder.reorder(params["reorder_num_neighbors"])
    searcher = builder.build()
    return ItemIndex(searcher, dict(params)), time.perf_counter() - t0


def exact_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int, chunk_size: int = 65536):
    """Exact inner-product top-k over the full embedding matrix [M, D] (row 0 never returned)."""
    scores, ids = metrics.chunked_top_k(jnp.asarray(queries, jnp.float32), jnp.asarray(embeddings, jnp.float32), k,
                                        chunk_size=chunk_size)
    return np.asarray(scores), np.asarray(ids)


def recall_against_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (padding id 0 ignored)."""
    approx_ids = np.asarray(approx_ids, np.int64)
    exact_ids = np.asarray(exact_ids, np.int64)
    if exact_ids.shape[0] == 0:
        raise ValueError("recall needs at least one query")
    hits = (approx_ids[:, :, None] == exact_ids[:, None, :]) & (exact_ids[:, None, :] > 0)  # [Q, k, k]
    denom = np.maximum((exact_ids > 0).sum(1), 1)
    return float(np.mean(hits.any(1).sum(1) / denom))


def measure_recall(index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray, k: int = 50,
                   exact_ids: np.ndarray | None = None) -> float:
    """recall@k of `index` against exact search on `embeddings` [M, D] for `queries` [Q, D]."""
    _, approx = index.search(queries, k)
    if exact_ids is None:
        _, exact_ids = exact_top_k(queries, embeddings, k)
    return recall_against_exact(approx, exact_ids)


def tune_search(index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray, k: int, target: float,
                max_rounds: int = 6) -> list[dict]:
    """Raise the search-time effort until recall@k on `queries` reaches `target`; returns the steps tried.

    Search-time parameters only (no rebuild): num_leaves_to_search (tree) or reorder_num_neighbors
    (AH) is doubled per round, up to every leaf / 8x the start. Brute force is exact and not tuned.
    `index.params` is updated in place to the first setting that reaches the target (else the last).
    """
    kind = index.params["kind"]
    _, exact = exact_top_k(queries, embeddings, k)
    effort = ("num_leaves_to_search", "reorder_num_neighbors")
    steps = [{key: index.params[key] for key in effort if key in index.params}]
    steps[0]["recall"] = measure_recall(index, embeddings, queries, k, exact)
    if kind == "brute_force":
        return steps
    key = "num_leaves_to_search" if kind == "tree_ah" else "reorder_num_neighbors"
    cap = index.params["num_leaves"] if kind == "tree_ah" else 8 * index.params[key]
    for _ in range(max_rounds):
        if steps[-1]["recall"] >= target or index.params[key] >= cap:
            break
        index.params[key] = min(2 * index.params[key], cap)
        step = {key: index.params[key], "recall": measure_recall(index, embeddings, queries, k, exact)}
        steps.append(step)
    return steps
