"""The exported user encoder at serving time: its inputs, loading and batched calls (no model code).

Signature of every artifact's encoder (see export.py):
    call(constants, history [b, L] int32, history_uploader [b, L] int32, history_tags [b, L, T] int32,
         mask [b, L] bool) -> (interests [b, K, D] float32, valid [b, K] bool)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np

ENCODER_INPUTS = ("history", "history_uploader", "history_tags", "mask")
ENCODER_OUTPUTS = ("interests", "valid")


def encoder_inputs(histories: list[np.ndarray], max_len: int, item_uploader: np.ndarray,
                   item_tags: np.ndarray) -> dict[str, np.ndarray]:
    """Right-aligned encoder inputs for item-index histories, built as data/sampler.gather_windows does:
    the last `max_len` items, most recent at position L-1, left padding 0, side ids from the tables."""
    b = len(histories)
    history = np.zeros((b, max_len), np.int32)  # [b, L]
    for row, h in enumerate(histories):
        h = np.asarray(h, np.int32)[-max_len:]
        if h.size:
            history[row, max_len - h.size:] = h
    return {"history": history, "history_uploader": item_uploader[history],  # [b, L]; item 0 -> 0
            "history_tags": item_tags[history], "mask": history > 0}  # [b, L, T], [b, L]


def load_encoder(directory: str) -> tuple[Callable, list[np.ndarray]]:
    """(jitted call, constants) of an artifact's encoder/ directory."""
    with open(os.path.join(directory, "encoder.bin"), "rb") as fh:
        exported = jax.export.deserialize(bytearray(fh.read()))
    with np.load(os.path.join(directory, "constants.npz"), allow_pickle=False) as z:
        constants = [z[f"c{i:04d}"] for i in range(len(z.files))]
    return jax.jit(exported.call), constants


def encode_histories(call, constants, histories: list[np.ndarray], max_len: int, item_uploader, item_tags,
                     batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Run an encoder over non-empty item-index histories in batches -> (interests [B, K, D], valid [B, K])."""
    outs, valids = [], []
    for lo in range(0, len(histories), batch_size):
        x = encoder_inputs(histories[lo:lo + batch_size], max_len, item_uploader, item_tags)
        interests, valid = call(constants, *(x[k] for k in ENCODER_INPUTS))
        outs.append(np.asarray(interests, np.float32))
        valids.append(np.asarray(valid, bool))
    return np.concatenate(outs), np.concatenate(valids)
