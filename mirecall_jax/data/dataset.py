"""The processed dataset: dense int32 ids, CSR per-user sequences, item side tables, the split.

Index conventions (used by every model, sampler and exporter):
  * items: 1..num_items-1, 0 = padding.  uploaders: 1..num_uploaders-1, 0 = unknown/padding.
  * tags:  1..num_tags-1, 0 = padding.  categories: 0..num_categories-1, -1 = unknown.
  * users: 0..num_users-1 (no padding; the per-user activation table is indexed by these).

A user's sequence is `items[offsets[u]:offsets[u+1]]`, time-ordered (stable: equal timestamps keep
file order). The split is positional: a training user may use `items[offsets[u]:offsets[u]+train_end[u]]`;
an evaluation user's history is the first `history_end[u]` items of that set and the targets the rest
up to `target_end[u]`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np


@dataclasses.dataclass
class EvalSplit:
    """Users evaluated on one split; history = seq[:history_end], targets = seq[history_end:target_end]."""

    users: np.ndarray  # [U_s] int32
    history_end: np.ndarray  # [U_s] int32
    target_end: np.ndarray  # [U_s] int32


@dataclasses.dataclass
class Dataset:
    # Vocabularies: index -> external id (index 0 of items/uploaders/tags is "" = padding).
    item_ids: np.ndarray  # [num_items] str
    user_ids: np.ndarray  # [num_users] str
    uploader_ids: np.ndarray  # [num_uploaders] str
    tag_ids: np.ndarray  # [num_tags] str
    category_ids: np.ndarray  # [num_categories] str
    # Per-user sequences, CSR.
    offsets: np.ndarray  # [num_users + 1] int64
    items: np.ndarray  # [N] int32
    timestamps: np.ndarray  # [N] int64
    # Item side tables, indexed by item index.
    item_uploader: np.ndarray  # [num_items] int32 (0 = none)
    item_tags: np.ndarray  # [num_items, T] int32 (0 = padding)
    item_category: np.ndarray  # [num_items] int32 (-1 = none)
    item_count: np.ndarray  # [num_items] int64, interactions in the training part (popularity, logQ)
    # Split.
    train_users: np.ndarray  # [U_train] int32
    train_end: np.ndarray  # [num_users] int32, usable prefix length for training (0 = not a train user)
    valid: EvalSplit
    test: EvalSplit
    # Planted ground truth (synthetic only), else None.
    item_topic: np.ndarray | None = None  # [num_items] int32, -1 on padding
    user_topics: np.ndarray | None = None  # [num_users, K_max] int32, -1 padded
    stats: dict = dataclasses.field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_uploaders(self) -> int:
        return len(self.uploader_ids)

    @property
    def num_tags(self) -> int:
        return len(self.tag_ids)

    @property
    def num_categories(self) -> int:
        return len(self.category_ids)

    @property
    def max_tags(self) -> int:
        return self.item_tags.shape[1]

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def eval_split(self, name: str) -> EvalSplit:
        if name not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {name!r}")
        return self.valid if name == "valid" else self.test

    # ---- persistence (npz arrays + JSON stats) ----
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        arrays = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, EvalSplit):
                for g in dataclasses.fields(EvalSplit):
                    arrays[f"{f.name}.{g.name}"] = getattr(v, g.name)
            elif isinstance(v, np.ndarray):
                arrays[f.name] = v
        tmp = os.path.join(directory, "dataset.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, os.path.join(directory, "dataset.npz"))
        with open(os.path.join(directory, "stats.json"), "w") as fh:
            json.dump(self.stats, fh, indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory: str) -> "Dataset":
        with np.load(os.path.join(directory, "dataset.npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with open(os.path.join(directory, "stats.json")) as fh:
            stats = json.load(fh)
        kwargs = {"stats": stats}
        for f in dataclasses.fields(cls):
            if f.name in ("valid", "test"):
                kwargs[f.name] = EvalSplit(**{g.name: arrays[f"{f.name}.{g.name}"] for g in dataclasses.fields(EvalSplit)})
            elif f.name in arrays:
                kwargs[f.name] = arrays[f.name]
        return cls(**kwargs)
