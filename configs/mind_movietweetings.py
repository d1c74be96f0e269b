"""MIND baseline (B2I dynamic routing, 3 iterations, dynamic K, argmax activation) on movietweetings."""

from mirecall_jax.config import base_config, use_dataset


def get_config():
    c = use_dataset(base_config(), "movietweetings")
    c.model.family = "mind"
    c.model.num_interests = 4
    c.model.routing_iters = 3
    c.model.dynamic_k = True
    return c
