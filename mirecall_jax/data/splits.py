"""Train / valid / test splits over users (ComiRec protocol) or over positions (leave-last-out).

Both produce the same positional description (see `Dataset`): a training prefix length per user
and, for each evaluation split, (users, history_end, target_end).
"""

from __future__ import annotations

import numpy as np

from mirecall_jax.data.dataset import EvalSplit
from mirecall_jax.data.events import DataError, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID


def _eval_split(users: np.ndarray, lengths: np.ndarray, history_fraction: float) -> EvalSplit:
    users = np.sort(users).astype(np.int32)
    n = lengths[users]
    # ComiRec: k = int(len * 0.8); history = seq[:k], targets = seq[k:]. Keep >= 1 of each.
    history_end = np.clip((n * history_fraction).astype(np.int32), 1, n - 1)
    keep = n >= 2
    return EvalSplit(users[keep], history_end[keep].astype(np.int32), n[keep].astype(np.int32))


def comirec_split(lengths: np.ndarray, seed: int, fractions, history_fraction: float):
    """Users shuffled with `seed`, cut train:valid:test by `fractions` (ComiRec: 8:1:1)."""
    num_users = len(lengths)
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DataError(f"config.data.split_fractions: expected 3 non-negative fractions summing to 1, got {tuple(fractions)}")
    perm = np.random.default_rng([seed, 0x5B117]).permutation(num_users)
    n_train = int(round(num_users * fractions[0]))
    n_valid = int(round(num_users * fractions[1]))
    code = np.full(num_users, SPLIT_TEST, np.int8)
    code[perm[:n_train]] = SPLIT_TRAIN
    code[perm[n_train : n_train + n_valid]] = SPLIT_VALID
    return split_from_user_codes(code, lengths, history_fraction)


def split_from_user_codes(code: np.ndarray, lengths: np.ndarray, history_fraction: float):
    """Given each user's split code (from a shuffle or from ComiRec's files), the positional split."""
    train_users = np.flatnonzero(code == SPLIT_TRAIN).astype(np.int32)
    train_end = np.where(code == SPLIT_TRAIN, lengths, 0).astype(np.int32)
    valid = _eval_split(np.flatnonzero(code == SPLIT_VALID), lengths, history_fraction)
    test = _eval_split(np.flatnonzero(code == SPLIT_TEST), lengths, history_fraction)
    return train_users, train_end, valid, test


def leave_last_out_split(lengths: np.ndarray):
    """Every user trains on all but its last two items; valid target = second last, test = last."""
    users = np.arange(len(lengths), dtype=np.int32)
    ok = lengths >= 3
    train_end = np.where(ok, lengths - 2, lengths).astype(np.int32)
    n = lengths[ok].astype(np.int32)
    valid = EvalSplit(users[ok], n - 2, n - 1)
    test = EvalSplit(users[ok], n - 1, n)
    return users, train_end, valid, test
