"""A random training batch with right-aligned histories, shared by the model tests."""

import numpy as np


def random_batch(seed: int, lengths, max_len: int, max_tags: int, num_items: int, num_uploaders: int,
                 num_tags: int) -> dict:
    """Histories with the given numbers of valid items (left padding = id 0), random targets."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    mask = np.arange(max_len)[None, :] >= max_len - np.asarray(lengths)[:, None]  # [B, L]
    return {
        "user": np.arange(b, dtype=np.int32),
        "history": np.where(mask, rng.integers(1, num_items, (b, max_len)), 0).astype(np.int32),
        "history_uploader": np.where(mask, rng.integers(0, num_uploaders, (b, max_len)), 0).astype(np.int32),
        "history_tags": np.where(mask[..., None], rng.integers(0, num_tags, (b, max_len, max_tags)), 0).astype(np.int32),
        "mask": mask,
        "target": rng.integers(1, num_items, b).astype(np.int32),
        "target_uploader": rng.integers(0, num_uploaders, b).astype(np.int32),
        "target_tags": rng.integers(0, num_tags, (b, max_tags)).astype(np.int32),
    }
