"""item2vec (word2vec skip-gram over watch sequences, sampled softmax with word2vec's unigram^0.75
negatives, frequent-item subsampling) on movietweetings: the embeddings PinnerSage clusters by default.
See mirecall_jax/models/item2vec.py for exactly what is trained."""

from mirecall_jax.config import base_config, use_dataset
from mirecall_jax.pinnersage.config import item2vec_config


def get_config():
    c = use_dataset(base_config(), "movietweetings")
    c.model.family = "item2vec"
    c.model.num_interests = 1  # one query vector (the window's pair-weighted input vectors)
    c.model.item2vec = item2vec_config()
    c.loss.kind = "sampled_softmax"
    c.loss.negative_sampling = "popularity"  # count ** 0.75: word2vec's noise distribution
    c.loss.popularity_alpha = 0.75
    c.loss.logq_correction = False  # word2vec's negative sampling does not correct for the proposal
    return c
