"""Mixture-of-Experts two-tower (E experts = interests, max aggregation) with global in-batch
negatives, logQ correction and focal loss, on movietweetings."""

from mirecall_jax.config import base_config, use_dataset


def get_config():
    c = use_dataset(base_config(), "movietweetings")
    c.model.family = "moe"
    c.model.num_interests = 4  # E experts
    c.model.use_uploader = True  # video tower fuses uploader and tag embeddings
    c.model.use_tags = True
    c.model.moe.aggregation = "max"
    c.loss.kind = "in_batch"  # negatives: the other targets of the global batch, on every device
    c.loss.logq_correction = True  # from training-part item frequencies
    c.loss.focal_gamma = 1.0  # up-weights hard negatives' examples; 0 = plain softmax
    c.loss.temperature = 0.1  # in-batch logits need a temperature: towers end in unnormalised MLPs
    c.train.batch_size = 1024 if "movietweetings" == "synthetic" else 512  # in-batch: more negatives per step
    return c
