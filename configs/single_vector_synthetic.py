"""Single-vector two-tower baseline on the built-in synthetic log (mean pool -> MLP, sampled softmax)."""

from mirecall_jax.config import base_config


def get_config():
    c = base_config()
    c.model.family = "single_vector"
    c.model.num_interests = 1
    c.train.batch_size = 256
    c.train.max_steps = 3000
    c.train.eval_every = 500
    return c
