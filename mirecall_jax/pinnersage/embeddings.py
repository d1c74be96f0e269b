"""PinnerSage's frozen item table [num_items, D], aligned with the dataset's item vocabulary.

Sources (`config.model.pinnersage.embeddings`, path or workdir in `.source`):
  "item2vec"    an item2vec workdir (train.py): its `input_embedding` or `output_embedding` table
  "checkpoint"  any trained family's workdir: its item tower over the catalogue (`evaluate.item_vectors`)
  "npy"         a .npy [num_items, D] whose row i is item index i (row 0 = padding), or a .npz with
                `embeddings` [N, D] (or its only array) and optionally `item_ids` [N] (external ids,
                str or int): rows are then matched to `dataset.item_ids` by id, and every dataset
                item must have one (extra rows are ignored and counted).
A workdir trained on a different vocabulary (other filters, other data version) is aligned by
external id in the same way. Row 0 (padding) is zero; `normalize` L2-normalises the other rows
(the model's `cluster_on_unit` normalises for clustering only, leaving the table as loaded).
"""

from __future__ import annotations

import os

import jax
import numpy as np

KINDS = ("item2vec", "checkpoint", "npy")


def align_rows(emb: np.ndarray, ids, item_ids: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Table [len(item_ids), D] with row i = the row of `emb` whose id is item_ids[i] (row 0: zeros).

    Returns (table, number of rows of `emb` unused). Raises if an id repeats or a dataset item is missing.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != emb.shape[0]:
        raise ValueError(f"{name}: item_ids has shape {ids.shape}; expected ({emb.shape[0]},), one id per embedding row")
    ids = ids.astype(str)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise ValueError(f"{name}: item_ids repeats {dup.size} id(s), e.g. {dup[:5].tolist()}")
    need = np.asarray(item_ids)[1:].astype(str)  # index 0 is padding
    pos = np.clip(np.searchsorted(sorted_ids, need), 0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == need if len(sorted_ids) else np.zeros(len(need), bool)
    if not found.all():
        missing = need[~found]
        raise ValueError(f"{name}: {missing.size} of the dataset's {need.size} items have no embedding row "
                         f"(missing ids, first {min(5, missing.size)}: {missing[:5].tolist()})")
    table = np.zeros((len(item_ids), emb.shape[1]), np.float32)
    table[1:] = emb[order[pos]]
    return table, int(emb.shape[0] - need.size)


def _check_matrix(emb: np.ndarray, name: str) -> np.ndarray:
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise ValueError(f"{name}: embeddings have shape {emb.shape}; expected a 2-D array [num_items, D]")
    if not np.issubdtype(emb.dtype, np.floating) and not np.issubdtype(emb.dtype, np.integer):
        raise ValueError(f"{name}: embeddings have dtype {emb.dtype}; expected a numeric array")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        bad = np.unique(np.nonzero(~np.isfinite(emb))[0])
        raise ValueError(f"{name}: {bad.size} row(s) contain NaN or inf (first: {list(bad[:5])})")
    return emb


def load_array(path: str, dataset) -> tuple[np.ndarray, dict]:
    """The "npy" source: (table [num_items, D] float32, info)."""
    if not path:
        raise ValueError("config.model.pinnersage.source: empty; give the .npy / .npz file of item embeddings")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.model.pinnersage.source: {path}: no such file")
    ids = None
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                arrays = [k for k in keys if k != "item_ids"]
                if "embeddings" in keys:
                    key = "embeddings"
                elif len(arrays) == 1:
                    key = arrays[0]
                else:
                    raise ValueError(f"{path}: expected an array named 'embeddings' (or a single array besides "
                                     f"'item_ids'); found {keys}")
                emb = z[key]
                ids = z["item_ids"] if "item_ids" in keys else None
        elif path.endswith(".npy"):
            emb = np.load(path, allow_pickle=False)
        else:
            raise ValueError(f"{path}: expected a .npy or .npz file")
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: holds object arrays; save item_ids as a str or int array") from e
        raise
    emb = _check_matrix(emb, path)
    info = {"kind": "npy", "source": os.path.abspath(path), "rows": int(emb.shape[0])}
    if ids is not None:
        table, unused = align_rows(emb, ids, dataset.item_ids, path)
        return table, {**info, "aligned_by_id": True, "unused_rows": unused}
    if emb.shape[0] != dataset.num_items:
        raise ValueError(f"{path}: embeddings have shape {emb.shape}; expected ({dataset.num_items}, D): one row per "
                         f"item index of the dataset's vocabulary (row 0 = padding), or an .npz with 'item_ids' to "
                         f"align rows by external id")
    table = emb.copy()
    table[0] = 0.0
    return table, {**info, "aligned_by_id": False}


def load_workdir_table(kind: str, workdir: str, which: str, item2vec_table: str, dataset) -> tuple[np.ndarray, dict]:
    """The "item2vec" / "checkpoint" sources: the table of a trained workdir, aligned with `dataset`."""
    from mirecall_jax.evaluate import item_vectors
    from mirecall_jax.train.loop import restore_for_inference

    if not workdir:
        raise ValueError(f"config.model.pinnersage.source: empty; give the workdir of the {kind} run")
    run = restore_for_inference(workdir, str(which))
    family = run.config.model.family
    if kind == "item2vec":
        if family != "item2vec":
            raise ValueError(f"{workdir}: trained family {family!r}, not item2vec; use embeddings='checkpoint' "
                             f"for another family's item tower")
        if item2vec_table not in ("input", "output"):
            raise ValueError(f"config.model.pinnersage.item2vec_table: expected 'input' or 'output', got {item2vec_table!r}")
        table = run.state.params[f"{item2vec_table}_embedding"]["embedding"]
    else:
        table = item_vectors(run.model, run.state.params, run.state.tables, run.dataset.num_items)
    table = _check_matrix(np.asarray(jax.device_get(table)), workdir)
    info = {"kind": kind, "source": os.path.abspath(workdir), "step": run.step, "family": family,
            "rows": int(table.shape[0])}
    run.checkpointer.close()
    src_ids = np.asarray(run.dataset.item_ids)
    if src_ids.shape == dataset.item_ids.shape and np.array_equal(src_ids, dataset.item_ids):
        table = table.copy()
        table[0] = 0.0
        return table, {**info, "aligned_by_id": False}
    table, unused = align_rows(table[1:], src_ids[1:], dataset.item_ids, f"{workdir} (item vocabulary)")
    return table, {**info, "aligned_by_id": True, "unused_rows": unused}


def normalize_rows(table: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(table, axis=1, keepdims=True)
    return np.where(norm > 0, table / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def load_embeddings(pcfg, dataset) -> tuple[np.ndarray, dict]:
    """(table [dataset.num_items, D] float32, info dict for the summary) for `config.model.pinnersage`."""
    if pcfg.embeddings == "npy":
        table, info = load_array(pcfg.source, dataset)
    elif pcfg.embeddings in ("item2vec", "checkpoint"):
        table, info = load_workdir_table(pcfg.embeddings, pcfg.source, pcfg.checkpoint, pcfg.item2vec_table, dataset)
    else:
        raise ValueError(f"config.model.pinnersage.embeddings: expected one of {KINDS}, got {pcfg.embeddings!r}")
    if pcfg.normalize:
        table = normalize_rows(table)
    zero = int(np.sum(~np.any(table[1:] != 0, axis=1)))
    return table, {**info, "dim": int(table.shape[1]), "normalized": bool(pcfg.normalize), "zero_rows": zero}
