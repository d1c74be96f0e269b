"""Single-vector two-tower baseline (YouTube-DNN style: mean pool -> MLP, sampled softmax) on grocery.

Family presets: mirecall_jax/config.py:use_family; dataset presets: use_dataset; every field is
documented in base_config.
"""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    return use_family(use_dataset(base_config(), "grocery"), "single_vector")
