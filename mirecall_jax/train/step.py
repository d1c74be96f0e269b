"""The pure train step shared by every trainable family: user tower -> activated interest -> loss.

`make_train_step(model, tx, config)` returns `train_step(state, batch, rng) -> (state, metrics)`,
a pure function the partitioner jits with shardings and state donation. Family specifics enter
only through the model: its `encode_users` returns the K interests and their validity mask, and
any regulariser terms it wants added to the loss in `aux["penalties"]` (already weighted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mirecall_jax import losses
from mirecall_jax.models.activation import label_aware_attention
from mirecall_jax.train.state import TrainState


def select_activated(interests: jnp.ndarray, mask: jnp.ndarray, target: jnp.ndarray):
    """Single activation: the valid interest most similar to the target, by masked gather.

    interests [B, K, D], mask [B, K] bool, target [B, D] -> (activated [B, D], index [B] int32).
    Static shapes, no control flow; invalid interests can never win (score -inf). The gather means
    gradients flow only into the activated interest.
    """
    scores = jnp.einsum("bkd,bd->bk", interests, jax.lax.stop_gradient(target))  # [B, K]
    scores = jnp.where(mask, scores, -jnp.inf)
    index = jnp.argmax(scores, axis=-1).astype(jnp.int32)  # [B]
    activated = jnp.take_along_axis(interests, index[:, None, None], axis=1)[:, 0]  # [B, D]
    return activated, index


def item_side(tables: dict, ids: jnp.ndarray):
    """Side ids for item ids, from the device-resident tables: (uploader [...], tags [..., T])."""
    return tables["item_uploader"][ids], tables["item_tags"][ids]


def make_loss_fn(model, config):
    loss_cfg, model_cfg = config.loss, config.model
    if model_cfg.activation not in ("argmax", "label_aware"):
        raise ValueError(f"config.model.activation: expected 'argmax' or 'label_aware', got {model_cfg.activation!r}")

    def loss_fn(params, state: TrainState, batch: dict, rng: jax.Array):
        drop_rng, neg_rng = jax.random.split(rng)
        variables = {"params": params}
        out = model.apply(variables, batch, train=True, method=model.encode_users, rngs={"dropout": drop_rng})
        pos = model.apply(variables, batch["target"], batch["target_uploader"], batch["target_tags"],
                          method=model.encode_items)  # [B, D]
        user, activated = select_activated(out.interests, out.mask, pos)  # [B, D], [B]
        if model_cfg.activation == "label_aware":  # soft activation; records still count the argmax
            user = label_aware_attention(out.interests, out.mask, pos, model_cfg.activation_power)
        target = batch["target"]
        if loss_cfg.kind == "sampled_softmax":
            neg_ids, neg_log_q = losses.sample_negatives(neg_rng, loss_cfg.num_negatives, state.tables["neg_probs"])
            neg = model.apply(variables, neg_ids, *item_side(state.tables, neg_ids), method=model.encode_items)  # [N, D]
            use_q = loss_cfg.logq_correction
            per_example = losses.sampled_softmax_loss(
                user, pos, target, neg, neg_ids,
                neg_log_q=neg_log_q if use_q else None,
                pos_log_q=jnp.log(state.tables["neg_probs"][target]) if use_q else None,
                temperature=loss_cfg.temperature, focal_gamma=loss_cfg.focal_gamma)
        elif loss_cfg.kind == "in_batch":
            log_q = None
            if loss_cfg.logq_correction and loss_cfg.logq_source == "streaming":
                log_q = losses.estimated_log_q(losses.FrequencyState(**state.aux["item_frequency"]), target)
            elif loss_cfg.logq_correction:
                log_q = jnp.log(state.tables["item_freq"][target])
            per_example = losses.in_batch_softmax_loss(user, pos, target, log_q, temperature=loss_cfg.temperature,
                                                       focal_gamma=loss_cfg.focal_gamma)
        else:
            raise ValueError(f"config.loss.kind: expected 'sampled_softmax' or 'in_batch', got {loss_cfg.kind!r}")
        main = per_example.mean()
        penalties = out.aux.get("penalties", {})
        total = main + sum(penalties.values(), jnp.zeros(()))
        metrics = {"loss": total, "main_loss": main, **{f"penalty/{k}": v for k, v in penalties.items()},
                   **{f"disagreement/{k}": v for k, v in out.aux.get("disagreement", {}).items()}}
        if "gate_mass" in out.aux:  # MoE: mean gate weight per expert, to watch for expert collapse
            metrics.update({f"gate_mass/{e}": m for e, m in enumerate(out.aux["gate_mass"])})
        return total, (metrics, activated)

    return loss_fn


def make_train_step(model, tx: optax.GradientTransformation, config):
    loss_fn = make_loss_fn(model, config)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        (_, (metrics, activated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        aux = dict(state.aux)
        if "activation_global" in aux:  # activation records: how often each interest slot wins
            k = aux["activation_global"].shape[0]
            hits = jax.nn.one_hot(activated, k, dtype=aux["activation_global"].dtype)  # [B, K]
            aux["activation_global"] = aux["activation_global"] + hits.sum(0)
            if "activation_user" in aux:
                aux["activation_user"] = aux["activation_user"].at[batch["user"]].add(hits)
        if "item_frequency" in aux:  # streaming logQ (Yi et al. 2019): record this batch's targets
            freq = losses.FrequencyState(**aux["item_frequency"])
            aux["item_frequency"] = losses.update_frequency(freq, batch["target"], state.step,
                                                            lr=config.loss.frequency_lr)._asdict()
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, aux=aux), metrics

    return train_step
