"""Single-vector baseline on MovieTweetings (5-core, ComiRec split). Pass --config.data.path."""

from mirecall_jax.config import base_config


def get_config():
    c = base_config()
    c.data.format = "movietweetings"
    c.data.path = "../shared/data/movietweetings-100k"
    c.model.family = "single_vector"
    c.model.num_interests = 1
    c.model.max_len = 20  # median 5-core history is short; ComiRec uses 20 on comparable logs
    c.train.batch_size = 128
    c.train.max_steps = 30000
    c.train.eval_every = 500
    c.train.patience = 5
    return c
