"""Config fields of the two clustering-side families, attached by their configs/*.py files:

    c.model.pinnersage = pinnersage_config()   # family "pinnersage"
    c.model.item2vec = item2vec_config()       # family "item2vec" (the usual embedding source)

PinnerSage also reads `model.num_interests` (K: medoids queried per user), `model.max_len` (L:
history clustered); its vector size is the embedding table's, written back to
`model.embed_dim` by `pinnersage.run` so the workdir's config.json describes the checkpoint.
"""

from __future__ import annotations

import ml_collections


def pinnersage_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Where the frozen item embedding table comes from:
    #   "item2vec":   an item2vec workdir trained by train.py (source = that workdir)
    #   "checkpoint": the item tower of any trained family's workdir (source = that workdir)
    #   "npy":        an external .npy [num_items, D] or .npz (embeddings [N, D], optional item_ids [N])
    c.embeddings = "item2vec"
    c.source = ""  # the workdir (item2vec / checkpoint) or the .npy / .npz file (npy)
    c.checkpoint = "best"  # item2vec / checkpoint: which checkpoint of the source ("best" | "latest" | a step)
    c.item2vec_table = "input"  # item2vec: "input" (centre, word2vec's usual choice) or "output" vectors
    # Geometry. Measured (valid recall@50, item2vec input table): retrieval by the raw dot product
    # beats cosine on MovieTweetings (0.357 vs 0.307) and Grocery (0.126 vs 0.115): the norm carries
    # popularity; Ward on unit rows makes ward_threshold scale-free across tables.
    c.normalize = False  # L2-normalise the table itself (retrieval by cosine instead of dot product)
    c.cluster_on_unit = True  # Ward + medoids on L2-normalised rows; the interests are the medoids' raw rows
    c.ward_threshold = 1.0  # cut the Ward tree at this merge height (scipy units; two unit rows: 0..2)
    c.max_clusters = 0  # at most this many clusters per user (merge further, fcluster 'maxclust'); 0 = L
    c.importance_lambda = 0.1  # cluster importance = sum over members of exp(-lambda * age)
    c.time_unit_seconds = 0.0  # age unit in seconds (86400 = days, needs history_time); 0 = ages in actions
    c.selection = "top"  # "top": the K most important clusters; "sample": K drawn by importance (per-user seed)
    c.sample_seed = 0  # "sample": draws are fold_in(PRNGKey(sample_seed), user), the same in every run
    c.distances = "gram"  # Ward's pairwise distances: "gram" (one matmul, fast) or "direct" (exact duplicates)
    c.chunk = 256  # users per Ward work chunk (memory ~ chunk * L^2 floats)
    return c


def item2vec_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "skipgram"  # "skipgram": one (context -> target) pair per example; "cbow": mean of the window
    c.window = 5  # context: the last `window` history items before the target
    c.subsample = 1e-3  # word2vec's frequent-item subsampling threshold t (0 = off)
    return c
