"""Mixture-of-Experts two-tower (E experts, max aggregation, global in-batch negatives, logQ, focal loss) on grocery.

Family presets: mirecall_jax/config.py:use_family; dataset presets: use_dataset; every field is
documented in base_config.
"""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    return use_family(use_dataset(base_config(), "grocery"), "moe")
