"""PinnerSage on synthetic: Ward clusters of each user's last L items in item2vec space, medoids as
interests, the K most important (recency-weighted size) queried by dot product.

Two commands: train the embeddings, then run PinnerSage over them (nothing is trained):
  train.py --config configs/item2vec_synthetic.py --workdir W_I2V
  train.py --config configs/pinnersage_synthetic.py --workdir W --config.model.pinnersage.source=W_I2V
"""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    c = use_family(use_dataset(base_config(), "synthetic"), "pinnersage")
    # valid recall@50 over item2vec (3,000 steps): 0.5175 at 1.0, 0.5323 at 1.5, 0.5323 at 2.0
    c.model.pinnersage.ward_threshold = 1.5
    return c
