"""Model families by name. A family = a Linen module (see models/base.py) + the loss config."""

from __future__ import annotations

from mirecall_jax.models.comirec_sa import ComiRecSA
from mirecall_jax.models.item2vec import build_item2vec
from mirecall_jax.models.mind import MIND
from mirecall_jax.models.moe import MoETwoTower
from mirecall_jax.models.pinnersage import build_pinnersage
from mirecall_jax.models.single_activation import SingleActivation
from mirecall_jax.models.single_vector import SingleVector


def _common(cfg, ds) -> dict:
    return dict(num_items=ds.num_items, num_uploaders=ds.num_uploaders, num_tags=ds.num_tags, dim=cfg.embed_dim,
                use_uploader=cfg.use_uploader, use_tags=cfg.use_tags)


def _single_vector(cfg, ds):
    return SingleVector(**_common(cfg, ds), hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)


def _single_activation(cfg, ds):
    return SingleActivation(**_common(cfg, ds), num_interests=cfg.num_interests, max_len=cfg.max_len,
                            num_layers=cfg.num_layers, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim or None,
                            dropout=cfg.dropout, readout=cfg.readout,
                            readout_values=cfg.readout_values, readout_projection=cfg.readout_projection,
                            cos_weight=cfg.cos_weight,
                            orth_weight=cfg.orth_weight, attn_weight=cfg.attn_weight)


def _comirec_sa(cfg, ds):
    return ComiRecSA(**_common(cfg, ds), num_interests=cfg.num_interests, max_len=cfg.max_len,
                     hidden_factor=cfg.comirec_hidden_factor)


def _mind(cfg, ds):
    return MIND(**_common(cfg, ds), num_interests=cfg.num_interests, routing_iters=cfg.routing_iters,
                dynamic_k=cfg.dynamic_k)


def _moe(cfg, ds):
    m = cfg.moe
    return MoETwoTower(**_common(cfg, ds), num_experts=cfg.num_interests, expert_hidden=cfg.hidden_dim,
                       dropout=cfg.dropout, gate_hidden=m.gate_hidden, aggregation=m.aggregation,
                       balance_weight=m.balance_weight, router_weight=m.router_weight, item_mlp=m.item_mlp,
                       gate_threshold=m.gate_threshold, normalize=m.normalize, share_embeddings=m.share_embeddings)


# An explicit table (not getattr by string): a new family adds one line here.
FAMILIES = {
    "single_vector": _single_vector,
    "single_activation": _single_activation,
    "comirec_sa": _comirec_sa,
    "mind": _mind,
    "moe": _moe,
    "item2vec": build_item2vec,  # item embeddings for PinnerSage (skip-gram / CBOW, sampled softmax)
    "pinnersage": build_pinnersage,  # Ward clusters of a frozen item table -> medoids (no training)
}


def num_interests(model_cfg) -> int:
    """K as the model will emit it (single-vector models always emit one vector)."""
    if model_cfg.family in ("single_vector", "item2vec") or (model_cfg.family == "moe" and model_cfg.moe.aggregation == "gated"):
        return 1
    return int(model_cfg.num_interests)


def build_model(model_cfg, dataset):
    try:
        builder = FAMILIES[model_cfg.family]
    except KeyError:
        raise ValueError(f"config.model.family: unknown family {model_cfg.family!r}; expected one of {sorted(FAMILIES)}") from None
    return builder(model_cfg, dataset)
