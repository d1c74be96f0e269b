"""Event log -> processed `Dataset`: dedupe, k-core, vocabularies, CSR sequences, side tables, split.

`load_dataset(config)` is the one entry point: it reads the source (or generates the synthetic
log), preprocesses, and caches the result under a key made from the source files' content hash and
the preprocessing config, so a second run skips reading and parsing entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from mirecall_jax.data import splits
from mirecall_jax.data.dataset import Dataset
from mirecall_jax.data.events import DataError, EventLog
from mirecall_jax.data.readers import read_event_log, source_files
from mirecall_jax.data.vocab import build_vocab, lookup

CACHE_FORMAT = 1  # bump when preprocessing output changes, to invalidate old caches


def dedupe(log: EventLog) -> tuple[np.ndarray, int]:
    """Row indices (file order) without exact (user, item, timestamp) duplicates, and their count."""
    keys = np.rec.fromarrays([log.user, log.item, log.timestamp])
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    return keep, len(log.user) - len(keep)


def k_core(user: np.ndarray, item: np.ndarray, min_item: int, min_user: int) -> tuple[np.ndarray, np.ndarray]:
    """ComiRec's filter: one pass dropping items with < min_item rows, then users with < min_user.

    Returns (row mask, catalogue): the catalogue is every item that passed the item filter, even if
    all its rows belonged to users the user filter then dropped (MovieTweetings: 2,727 items, 2,721
    of them with rows left). Such items stay retrievable, as new catalogue items would be.
    """
    keep = np.ones(len(user), bool)
    uniq, inv, cnt = np.unique(item, return_inverse=True, return_counts=True)
    if min_item > 0:
        keep &= cnt[inv] >= min_item
        uniq = uniq[cnt >= min_item]
    if min_user > 0:
        _, inv_u, cnt_u = np.unique(user[keep], return_inverse=True, return_counts=True)
        keep[np.flatnonzero(keep)[cnt_u[inv_u] < min_user]] = False
    return keep, uniq


def _side_tables(log: EventLog, item_vocab: np.ndarray, max_tags: int):
    """item index -> uploader index [I], tag indices [I, T], category index [I] and their vocabs."""
    num_items = len(item_vocab)
    uploader = np.zeros(num_items, np.int32)
    tags = np.zeros((num_items, max_tags), np.int32)
    category = np.full(num_items, -1, np.int32)
    empty = np.array([""])
    uploader_vocab, tag_vocab, category_vocab = empty, empty, np.zeros(0, "U1")
    table = log.items
    if table is None:
        return uploader, tags, category, uploader_vocab, tag_vocab, category_vocab
    row_item = lookup(item_vocab, table.item)  # [M] item index or 0 if the item was filtered out
    kept = row_item > 0
    if table.uploader is not None:
        names = table.uploader[kept]
        uploader_vocab, idx = build_vocab(names[names != ""])
        uploader[row_item[kept][names != ""]] = idx
    if table.category is not None:
        names = table.category[kept]
        has = names != ""
        category_vocab, idx = build_vocab(names[has])
        category_vocab = category_vocab[1:]  # categories have no padding slot: -1 = unknown
        category[row_item[kept][has]] = idx - 1
    if table.tags is not None and max_tags > 0:
        counts = np.diff(table.tag_offsets)
        row_of_tag = np.repeat(np.arange(len(table.item)), counts)
        rank = np.arange(len(table.tags)) - table.tag_offsets[row_of_tag]  # position within the item's tags
        sel = kept[row_of_tag] & (rank < max_tags)
        tag_vocab, idx = build_vocab(table.tags[sel])
        tags[row_item[row_of_tag[sel]], rank[sel]] = idx
    return uploader, tags, category, uploader_vocab, tag_vocab, category_vocab


def preprocess(log: EventLog, data_cfg, seed: int) -> Dataset:
    t0 = time.perf_counter()
    rows, duplicates = dedupe(log)
    user, item, ts = log.user[rows], log.item[rows], log.timestamp[rows]
    row_split = None if log.split is None else log.split[rows]
    keep, catalogue = k_core(user, item, data_cfg.min_item_count, data_cfg.min_user_count)
    user, item, ts = user[keep], item[keep], ts[keep]
    row_split = None if row_split is None else row_split[keep]
    if len(user) == 0:
        raise DataError(f"{data_cfg.format} at {data_cfg.path!r}: no interactions left after the k-core filter "
                        f"(min_item_count={data_cfg.min_item_count}, min_user_count={data_cfg.min_user_count})")

    user_vocab, u = build_vocab(user)
    user_vocab, u = user_vocab[1:], u - 1  # users need no padding slot
    item_vocab, _ = build_vocab(catalogue)
    i = lookup(item_vocab, item)
    order = np.lexsort((ts, u))  # by user, then time; lexsort is stable, so ties keep file order
    u, i, ts = u[order], i[order], ts[order]
    lengths = np.bincount(u, minlength=len(user_vocab))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    if row_split is not None:  # the source fixes each user's split (ComiRec files)
        code = np.full(len(user_vocab), -1, np.int8)
        code[u] = row_split[order]
        mixed = np.flatnonzero(np.bincount(u, minlength=len(user_vocab)) != np.bincount(u[row_split[order] == code[u]], minlength=len(user_vocab)))
        if mixed.size:
            raise DataError(f"{data_cfg.path}: user {user_vocab[mixed[0]]!r} appears in more than one split file")
        split = splits.split_from_user_codes(code, lengths, data_cfg.eval_history_fraction)
    elif data_cfg.split == "comirec":
        split = splits.comirec_split(lengths, seed, data_cfg.split_fractions, data_cfg.eval_history_fraction)
    elif data_cfg.split == "leave_last_out":
        split = splits.leave_last_out_split(lengths)
    else:
        raise DataError(f"config.data.split: expected 'comirec' or 'leave_last_out', got {data_cfg.split!r}")
    train_users, train_end, valid, test = split

    # Training-part popularity (for negative sampling and logQ): only positions a train example can use.
    pos_in_seq = np.arange(len(i)) - offsets[u]
    item_count = np.bincount(i[pos_in_seq < train_end[u]], minlength=len(item_vocab)).astype(np.int64)

    uploader, tags, category, uploader_vocab, tag_vocab, category_vocab = _side_tables(log, item_vocab, data_cfg.max_tags)
    item_topic = user_topics = None
    if log.items is not None and log.items.topic is not None:
        item_topic = np.full(len(item_vocab), -1, np.int32)
        idx = lookup(item_vocab, log.items.item)
        item_topic[idx[idx > 0]] = log.items.topic[idx > 0]
    if log.user_topics is not None:
        pos = np.searchsorted(log.user_topics_user, user_vocab, sorter=np.argsort(log.user_topics_user))
        user_topics = log.user_topics[np.argsort(log.user_topics_user)[pos]].astype(np.int32)

    stats = {
        "format": data_cfg.format,
        "raw_rows": int(len(log.user)),
        "raw_users": int(len(np.unique(log.user))),
        "raw_items": int(len(np.unique(log.item))),
        "skipped_rows": dict(log.bad_rows),
        "duplicate_rows_dropped": int(duplicates),
        "rows": int(len(i)),
        "users": int(len(user_vocab)),
        "items": int(len(item_vocab) - 1),
        "items_with_rows": int(np.count_nonzero(np.bincount(i, minlength=len(item_vocab))[1:])),
        "uploaders": int(len(uploader_vocab) - 1),
        "tags": int(len(tag_vocab) - 1),
        "categories": int(len(category_vocab)),
        "train_users": int(len(train_users)),
        "valid_users": int(len(valid.users)),
        "test_users": int(len(test.users)),
        "seq_len_mean": float(lengths.mean()),
        "seq_len_median": float(np.median(lengths)),
        "seq_len_max": int(lengths.max()),
        "preprocess_seconds": round(time.perf_counter() - t0, 3),
    }
    return Dataset(
        item_ids=item_vocab, user_ids=user_vocab, uploader_ids=uploader_vocab, tag_ids=tag_vocab,
        category_ids=category_vocab, offsets=offsets, items=i.astype(np.int32), timestamps=ts.astype(np.int64),
        item_uploader=uploader, item_tags=tags, item_category=category, item_count=item_count,
        train_users=train_users, train_end=train_end, valid=valid, test=test,
        item_topic=item_topic, user_topics=user_topics, stats=stats)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(data_cfg, seed: int, sources: list[str]) -> str:
    """Content hash of the source files + the preprocessing config + seed (the split depends on it)."""
    cfg = data_cfg.to_dict()
    cfg.pop("cache_dir", None)
    cfg.pop("path", None)  # the content hash identifies the data, wherever it lives
    if cfg["format"] != "synthetic":
        cfg.pop("synthetic", None)
    payload = {"v": CACHE_FORMAT, "seed": seed, "cfg": cfg, "files": [_file_digest(p) for p in sorted(sources)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_root(data_cfg) -> str:
    return data_cfg.cache_dir or os.environ.get("MIRECALL_CACHE") or os.path.expanduser("~/.cache/mirecall_jax")


def load_dataset(config, use_cache: bool = True) -> Dataset:
    """Reads, preprocesses and caches the dataset named by `config.data` (see mirecall_jax/config.py)."""
    data_cfg = config.data
    t0 = time.perf_counter()
    directory = None
    if use_cache:
        directory = os.path.join(cache_root(data_cfg), cache_key(data_cfg, config.seed, source_files(data_cfg)))
        if os.path.exists(os.path.join(directory, "stats.json")):
            ds = Dataset.load(directory)
            ds.stats["load_seconds"] = round(time.perf_counter() - t0, 3)
            ds.stats["cached"] = True
            return ds
    log = read_event_log(data_cfg, seed=config.seed)
    ds = preprocess(log, data_cfg, config.seed)
    ds.stats["cached"] = False
    if directory is not None:
        ds.save(directory)
    ds.stats["load_seconds"] = round(time.perf_counter() - t0, 3)
    return ds
