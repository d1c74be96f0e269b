"""Fixed-shape numpy batches from a `Dataset`, for training (ComiRec cut points) and evaluation.

Both paths go through one vectorised gather, `gather_windows`, so train and eval histories are
built identically. A window is right-aligned: the most recent item sits at position L-1 and the
row is left-padded with item 0 (see dataset.py for the index conventions).

Training batch (`TrainSampler.batch(step)`), b = batch_size / process_count rows:
  user              [b]        int32  user index
  history           [b, L]     int32  item indices, 0 = padding
  history_uploader  [b, L]     int32  dataset.item_uploader[history] (0 on padding)
  history_tags      [b, L, T]  int32  dataset.item_tags[history] (0 on padding)
  mask              [b, L]     bool   True where history holds an item
  target            [b]        int32  the item at the cut point (never 0)
  target_uploader   [b]        int32
  target_tags       [b, T]     int32
  history_time      [b, L]     int64  timestamps, 0 on padding   } only with
  target_time       [b]        int64                             } with_timestamps=True

Evaluation batch (`eval_batches`), always exactly batch_size rows so shapes are static under jit:
  user, history, history_uploader, history_tags, mask (+ history_time with with_timestamps) as above,
  with the history = seq[:history_end];
  targets           [b, max_targets] int32  seq[history_end:target_end], 0-padded on the right;
                    max_targets is the split's longest target list, the same for every batch
  targets_mask      [b, max_targets] bool
  valid             [b]        bool   False on rows that only pad the last batch. Padding rows are
                                      copies of the batch's first row (real, non-empty inputs, so a
                                      model never sees an all-padding history); drop them via `valid`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mirecall_jax.data.dataset import Dataset

MIN_CUT = 4  # ComiRec: a training target is at position >= 4 (when the sequence is long enough)


def gather_windows(dataset: Dataset, users: np.ndarray, ends: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
    """Right-aligned windows of the last `max_len` items of seq[u][:end], for every (u, end) pair."""
    users = np.asarray(users, np.int64)
    ends = np.asarray(ends, np.int64)
    # rel = position within the user's sequence for each window column; < 0 means left padding.
    rel = ends[:, None] + np.arange(-max_len, 0, dtype=np.int64)[None, :]  # [B, L]
    mask = rel >= 0  # [B, L]
    idx = np.where(mask, dataset.offsets[users][:, None] + rel, 0)  # [B, L] into the CSR arrays
    history = np.where(mask, dataset.items[idx], 0).astype(np.int32, copy=False)  # [B, L]
    return {
        "history": history,
        "history_uploader": dataset.item_uploader[history],  # [B, L]; item 0 -> uploader 0
        "history_tags": dataset.item_tags[history],  # [B, L, T]; item 0 -> all-0 tags
        "mask": mask,
        "history_time": np.where(mask, dataset.timestamps[idx], 0).astype(np.int64, copy=False),  # [B, L]
    }


class TrainSampler:
    """ComiRec-style training examples; batch `step` is a pure function of (seed, step, process).

    All processes draw the *global* batch's random numbers from `default_rng([seed, step])` (2 per
    example, cheap) and materialise only their own contiguous slice, so concatenating the slices of
    processes 0..P-1 gives exactly the 1-process batch, and a restart at any step replays exactly.
    Train users with train_end < 2 cannot give an example with a non-empty history and are skipped.
    """

    def __init__(self, dataset: Dataset, batch_size: int, max_len: int, seed: int,
                 process_index: int = 0, process_count: int = 1, with_timestamps: bool = False):
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
        if batch_size % process_count:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by process_count ({process_count})")
        users = np.asarray(dataset.train_users, np.int64)
        users = users[dataset.train_end[users] >= 2]
        if users.size == 0:
            raise ValueError("TrainSampler: no training user has train_end >= 2 (nothing to predict from)")
        self.dataset, self.max_len, self.seed = dataset, max_len, seed
        self.batch_size, self.with_timestamps = batch_size, with_timestamps
        self.users = users
        local = batch_size // process_count
        self._slice = slice(process_index * local, (process_index + 1) * local)

    def examples(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(user [b], cut [b]) of this process's slice: target = seq[u][cut], history = seq[u][:cut]."""
        rng = np.random.default_rng([self.seed, step])
        pick = rng.integers(len(self.users), size=self.batch_size)[self._slice]  # draw global, keep slice
        r = rng.random(self.batch_size)[self._slice]
        users = self.users[pick]
        end = self.dataset.train_end[users].astype(np.int64)
        lo = np.minimum(MIN_CUT, end - 1)  # cut uniform in [lo, end - 1]
        cut = lo + (r * (end - lo)).astype(np.int64)
        return users, np.minimum(cut, end - 1)  # guard float round-off at r -> 1

    def batch(self, step: int) -> dict[str, np.ndarray]:
        ds = self.dataset
        users, cut = self.examples(step)
        out = gather_windows(ds, users, cut, self.max_len)
        pos = ds.offsets[users] + cut
        target = ds.items[pos]  # [b]
        out["user"] = users.astype(np.int32)
        out["target"] = target
        out["target_uploader"] = ds.item_uploader[target]  # [b]
        out["target_tags"] = ds.item_tags[target]  # [b, T]
        if self.with_timestamps:
            out["target_time"] = ds.timestamps[pos]
        else:
            del out["history_time"]
        return out


def eval_batches(dataset: Dataset, split_name: str, max_len: int, batch_size: int,
                 with_timestamps: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Batches over every user of dataset.valid / dataset.test, in split order, each exactly once."""
    split = dataset.eval_split(split_name)
    n = len(split.users)
    if n == 0:
        return
    n_targets = (split.target_end - split.history_end).astype(np.int64)
    max_targets = max(1, int(n_targets.max()))
    cols = np.arange(max_targets, dtype=np.int64)[None, :]
    for lo in range(0, n, batch_size):
        rows = np.arange(lo, min(lo + batch_size, n))
        valid = np.ones(batch_size, bool)
        if len(rows) < batch_size:  # pad the last batch with copies of its first row
            valid[len(rows):] = False
            rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        users = split.users[rows].astype(np.int64)
        start = split.history_end[rows].astype(np.int64)
        out = gather_windows(dataset, users, start, max_len)
        if not with_timestamps:
            del out["history_time"]
        targets_mask = cols < n_targets[rows][:, None]  # [b, max_targets]
        idx = np.where(targets_mask, dataset.offsets[users][:, None] + start[:, None] + cols, 0)
        out["user"] = users.astype(np.int32)
        out["targets"] = np.where(targets_mask, dataset.items[idx], 0).astype(np.int32, copy=False)
        out["targets_mask"] = targets_mask
        out["valid"] = valid
        yield out
