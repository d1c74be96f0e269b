"""Single-vector baseline on Amazon Grocery (ReChorus 5-core TSV). i_category is the uploader-like id."""

from mirecall_jax.config import base_config


def get_config():
    c = base_config()
    c.data.format = "grocery"
    c.data.path = "../shared/data/grocery"
    c.model.family = "single_vector"
    c.model.num_interests = 1
    c.model.max_len = 20
    c.train.batch_size = 128
    c.train.max_steps = 30000
    c.train.eval_every = 500
    c.train.patience = 5
    return c
