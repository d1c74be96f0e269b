"""ComiRec-SA baseline (self-attentive K-head read-out, argmax activation, sampled softmax) on synthetic."""

from mirecall_jax.config import base_config, use_dataset


def get_config():
    c = use_dataset(base_config(), "synthetic")
    c.model.family = "comirec_sa"
    c.model.num_interests = 4
    return c
