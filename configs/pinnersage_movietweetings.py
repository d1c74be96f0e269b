"""PinnerSage on movietweetings: Ward clusters of each user's last L items in item2vec space, medoids as
interests, the K most important (recency-weighted size) queried by dot product.

Two commands: train the embeddings, then run PinnerSage over them (nothing is trained):
  train.py --config configs/item2vec_movietweetings.py --workdir W_I2V
  train.py --config configs/pinnersage_movietweetings.py --workdir W --config.model.pinnersage.source=W_I2V
"""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    c = use_family(use_dataset(base_config(), "movietweetings"), "pinnersage")
    # valid recall@50 over item2vec: 0.3570 at 0.5, 0.3538 at 1.0, 0.3492 at 1.5; histories are short (L = 20)
    c.model.pinnersage.ward_threshold = 0.5
    return c
