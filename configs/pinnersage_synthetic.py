"""PinnerSage on synthetic: Ward clusters of each user's last L items in item2vec space (cosine
geometry), medoids as interests, the K most important (recency-weighted size) queried by dot product.

Two commands: train the embeddings, then run PinnerSage over them (nothing is trained):
  train.py --config configs/item2vec_synthetic.py --workdir W_I2V
  train.py --config configs/pinnersage_synthetic.py --workdir W --config.model.pinnersage.source=W_I2V
"""

from mirecall_jax.config import base_config, use_dataset
from mirecall_jax.pinnersage.config import pinnersage_config


def get_config():
    c = use_dataset(base_config(), "synthetic")
    c.model.family = "pinnersage"
    c.model.num_interests = 4  # K medoids queried per user
    c.model.record_per_user = False  # no activation records: nothing is trained
    c.model.pinnersage = pinnersage_config()
    c.model.pinnersage.embeddings = "item2vec"  # source: an item2vec workdir (give it with --config...source=)
    # valid recall@50 over item2vec (3,000 steps): 0.5175 at 1.0, 0.5323 at 1.5, 0.5323 at 2.0 (2.9 interests)
    c.model.pinnersage.ward_threshold = 1.5
    return c
