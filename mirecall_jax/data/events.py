"""The raw event log every reader produces, and the bad-row policy they share.

A reader turns source files into an `EventLog`: columnar numpy arrays in file order with *external*
ids (strings), plus an optional per-item side table. Everything downstream (k-core, vocabularies,
splits) works on this one structure, so a new source format is only a new reader.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2


class DataError(ValueError):
    """Bad input: the message names the file, line, field and what was expected."""


def describe_bad_row(path, line: int | None, field: str | None, expected: str, got=None) -> str:
    where = f"{path}" if line is None else f"{path}:{line}"
    what = f" field '{field}'" if field else ""
    got_s = "" if got is None else f", got {got!r}"
    return f"{where}:{what} expected {expected}{got_s}"


class BadRowPolicy:
    """`on_bad_row = "error"` raises `DataError`; `"skip"` counts the row under `reason` and goes on.

    Every reader routes each malformed row through `bad()`, so skipped rows are never lost silently:
    `counts` (reason -> rows) ends up in the dataset stats and the run summary.
    """

    def __init__(self, on_bad_row: str = "error"):
        if on_bad_row not in ("error", "skip"):
            raise DataError(f"config.data.on_bad_row: expected 'error' or 'skip', got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.counts: collections.Counter[str] = collections.Counter()
        self.first_example: dict[str, str] = {}  # reason -> first message, for the summary

    def bad(self, reason: str, path, line: int | None, field: str | None, expected: str, got=None) -> None:
        msg = describe_bad_row(path, line, field, expected, got)
        if self.on_bad_row == "error":
            raise DataError(msg)
        self.counts[reason] += 1
        self.first_example.setdefault(reason, msg)


@dataclasses.dataclass
class ItemTable:
    """Side information per external item id (rows aligned with `item`)."""

    item: np.ndarray  # [M] str, unique external item ids
    uploader: np.ndarray | None = None  # [M] str: uploader / creator / category-like id, "" = unknown
    tag_offsets: np.ndarray | None = None  # [M + 1] int64, CSR offsets into `tags`
    tags: np.ndarray | None = None  # [nnz] str, tag names of item m are tags[tag_offsets[m]:tag_offsets[m+1]]
    category: np.ndarray | None = None  # [M] str, for diversity metrics ("" = unknown)
    topic: np.ndarray | None = None  # [M] int32 planted topic (synthetic ground truth only)


@dataclasses.dataclass
class EventLog:
    """Interactions in file order, external ids as strings."""

    user: np.ndarray  # [N] str
    item: np.ndarray  # [N] str
    timestamp: np.ndarray  # [N] int64
    items: ItemTable | None = None
    # Per-row split code (SPLIT_TRAIN/VALID/TEST) when the source fixes the split (ComiRec files).
    split: np.ndarray | None = None  # [N] int8
    # Planted interests (synthetic only): external user id -> topics, padded with -1.
    user_topics_user: np.ndarray | None = None  # [U'] str
    user_topics: np.ndarray | None = None  # [U', K_max] int32
    sources: list[str] = dataclasses.field(default_factory=list)  # paths read, for the cache key
    bad_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> skipped rows

    def __post_init__(self):
        n = len(self.user)
        if len(self.item) != n or len(self.timestamp) != n or (self.split is not None and len(self.split) != n):
            raise ValueError("EventLog columns have different lengths")
