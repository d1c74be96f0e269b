"""Single-activation transformer (K interests, argmax activation, sampled softmax over video ids) on movietweetings.

Side features (uploader id, pooled tags) enter the history encoder; the loss and the index use
video-id embeddings only.
"""

from mirecall_jax.config import base_config, use_dataset


def get_config():
    c = use_dataset(base_config(), "movietweetings")
    c.model.family = "single_activation"
    c.model.num_interests = 4
    c.model.use_uploader = True
    c.model.use_tags = True
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.dropout = 0.1
    c.model.readout = "queries"
    return c
