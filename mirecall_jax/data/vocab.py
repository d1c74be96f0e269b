"""Vocabularies: external string ids <-> dense int32 indices, with index 0 reserved for padding."""

from __future__ import annotations

import numpy as np

PAD = ""  # the external id stored at index 0


def build_vocab(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (vocab [V+1] str with vocab[0] = PAD, indices [N] int32 into it).

    Ids are numbered in sorted order, so the mapping depends only on the set of ids (not on file
    order) and the reverse mapping is simply `vocab[index]`.
    """
    uniq, inverse = np.unique(ids, return_inverse=True)
    vocab = np.concatenate([np.array([PAD], dtype=uniq.dtype if uniq.size else "U1"), uniq])
    return vocab, (inverse + 1).astype(np.int32)


def lookup(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """External ids -> indices; ids not in the vocabulary map to 0 (padding / unknown).

    `vocab[1:]` is sorted (see build_vocab), so this is a vectorised binary search.
    """
    ids = np.asarray(ids)
    known = vocab[1:]
    if known.size == 0 or ids.size == 0:
        return np.zeros(ids.shape, np.int32)
    pos = np.searchsorted(known, ids)
    pos_c = np.minimum(pos, known.size - 1)
    hit = known[pos_c] == ids
    return np.where(hit, pos_c + 1, 0).astype(np.int32)
