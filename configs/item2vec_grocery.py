"""item2vec (skip-gram over watch sequences, sampled softmax with word2vec's count^0.75 negatives,
frequent-item subsampling) on grocery: the embeddings PinnerSage clusters by default.
See mirecall_jax/models/item2vec.py for exactly what is trained."""

from mirecall_jax.config import base_config, use_dataset, use_family


def get_config():
    return use_family(use_dataset(base_config(), "grocery"), "item2vec")
