"""PinnerSage on grocery: Ward clusters of each user's last L items in item2vec space, medoids as
interests, the K most important (recency-weighted size) queried by dot product.

Two commands: train the embeddings, then run PinnerSage over them (nothing is trained):
  train.py --config configs/item2vec_grocery.py --workdir W_I2V
  train.py --config configs/pinnersage_grocery.py --workdir W --config.model.pinnersage.source=W_I2V
"""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    c = use_family(use_dataset(base_config(), "grocery"), "pinnersage")
    # valid recall@50 over item2vec: 0.1258 at 0.25-0.5 (every item its own cluster: the K most recent), 0.1017 at 1.0
    c.model.pinnersage.ward_threshold = 0.5
    return c
