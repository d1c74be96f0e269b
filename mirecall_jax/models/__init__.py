"""Model families by name. A family = a Linen module (see models/base.py) + the loss config."""

from __future__ import annotations

from mirecall_jax.models.single_vector import SingleVector


def _single_vector(cfg, ds):
    return SingleVector(num_items=ds.num_items, num_uploaders=ds.num_uploaders, num_tags=ds.num_tags,
                        dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, use_uploader=cfg.use_uploader,
                        use_tags=cfg.use_tags, dropout=cfg.dropout)


# An explicit table (not getattr by string): a new family adds one line here.
FAMILIES = {
    "single_vector": _single_vector,
}


def build_model(model_cfg, dataset):
    try:
        builder = FAMILIES[model_cfg.family]
    except KeyError:
        raise ValueError(f"config.model.family: unknown family {model_cfg.family!r}; expected one of {sorted(FAMILIES)}") from None
    return builder(model_cfg, dataset)
