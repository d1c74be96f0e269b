"""Single-vector two-tower baseline (YouTube-DNN style: mean pool -> MLP, sampled softmax) on synthetic."""

from mirecall_jax.config import base_config, use_dataset


def get_config():
    c = use_dataset(base_config(), "synthetic")
    c.model.family = "single_vector"
    c.model.num_interests = 1
    return c
