"""mirecall_jax.losses against direct numpy computations, on one device and on an 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from scipy import stats
from scipy.special import logsumexp

from mirecall_jax import losses


def _np_focal(logits_row: np.ndarray, gamma: float) -> float:
    """Loss of one row whose column 0 is the positive, masked entries already -inf (float64)."""
    log_p = logits_row[0] - logsumexp(logits_row)
    return float(-((1.0 - np.exp(log_p)) ** gamma) * log_p)


def _sampled_data(seed: int = 0, b: int = 6, n: int = 9, d: int = 5):
    rng = np.random.default_rng(seed)
    u, pe, ne = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(n, d))
    pos_ids = rng.integers(1, 20, size=b)
    neg_ids = rng.integers(1, 20, size=n)
    neg_ids[:3] = pos_ids[:3]  # guaranteed accidental hits for rows 0..2
    neg_lq, pos_lq = np.log(rng.uniform(0.01, 0.2, size=n)), np.log(rng.uniform(0.01, 0.2, size=b))
    return u, pe, pos_ids, ne, neg_ids, neg_lq, pos_lq


@pytest.mark.parametrize("use_log_q", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.2])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_sampled_softmax_matches_numpy(use_log_q, temperature, gamma):
    u, pe, pos_ids, ne, neg_ids, neg_lq, pos_lq = _sampled_data()
    want = []
    for b in range(u.shape[0]):
        pos = u[b] @ pe[b] / temperature - (pos_lq[b] if use_log_q else 0.0)
        neg = ne @ u[b] / temperature - (neg_lq if use_log_q else 0.0)
        neg = np.where(neg_ids == pos_ids[b], -np.inf, neg)  # accidental hits removed
        want.append(_np_focal(np.concatenate([[pos], neg]), gamma))
    got = jax.jit(losses.sampled_softmax_loss, static_argnames=("temperature", "focal_gamma"))(
        *map(jnp.asarray, (u, pe, pos_ids, ne, neg_ids)),
        neg_log_q=jnp.asarray(neg_lq) if use_log_q else None,
        pos_log_q=jnp.asarray(pos_lq) if use_log_q else None,
        temperature=temperature, focal_gamma=gamma,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_sampled_softmax_all_negatives_are_hits_gives_zero_loss():
    u = jnp.ones((2, 3))
    ids = jnp.array([4, 4])
    loss = losses.sampled_softmax_loss(u, u, ids, jnp.ones((3, 3)), jnp.array([4, 4, 4]))
    np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-6)


def test_focal_downweights_easy_examples_by_one_minus_p_to_gamma():
    # One-hot embeddings make the logits exactly the hand-made rows: [positive, neg1, neg2].
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 2.0, 2.0]])  # easy row, hard row
    eye = jnp.eye(3)
    args = (jnp.asarray(logits), jnp.tile(eye[:1], (2, 1)), jnp.array([1, 2]), eye[1:], jnp.array([7, 8]))
    ce = np.asarray(losses.sampled_softmax_loss(*args, focal_gamma=0.0))
    fl = np.asarray(losses.sampled_softmax_loss(*args, focal_gamma=2.0))
    p = np.exp(logits[:, 0] - logsumexp(logits, axis=1))  # e^4/(e^4+2) = 0.9647, 1/(1+2e^2) = 0.0634
    np.testing.assert_allclose(ce, -np.log(p), rtol=1e-5)
    np.testing.assert_allclose(fl / ce, (1 - p) ** 2, rtol=1e-5)
    assert (fl / ce)[0] < 0.002 < 0.8 < (fl / ce)[1]  # easy row nearly silenced, hard row kept


def _in_batch_data(seed: int = 1, b: int = 16, d: int = 6):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(b, d)).astype(np.float32), rng.normal(size=(b, d)).astype(np.float32)
    ids = rng.integers(1, 10, size=b).astype(np.int32)  # 16 rows over 9 ids: many duplicates
    log_q = np.log(rng.uniform(0.01, 0.3, size=b)).astype(np.float32)
    valid = np.ones(b, bool)
    valid[[3, 11]] = False
    return u, v, ids, log_q, valid


def _np_in_batch(u, v, ids, log_q, temperature, gamma, valid):
    s = (u.astype(np.float64) @ v.T.astype(np.float64)) / temperature
    if log_q is not None:
        s = s - log_q[None, :]
    out = np.zeros(len(u))
    for i in range(len(u)):
        if valid is not None and not valid[i]:
            continue
        negs = [j for j in range(len(u)) if j != i and ids[j] != ids[i] and (valid is None or valid[j])]
        out[i] = _np_focal(np.concatenate([[s[i, i]], s[i, negs]]), gamma)
    return out


@pytest.mark.parametrize("use_log_q", [False, True])
@pytest.mark.parametrize("use_valid", [False, True])
@pytest.mark.parametrize(("temperature", "gamma"), [(1.0, 0.0), (0.1, 2.0)])
def test_in_batch_matches_numpy(use_log_q, use_valid, temperature, gamma):
    u, v, ids, log_q, valid = _in_batch_data()
    assert len(set(ids.tolist())) < len(ids)  # the data really has duplicates
    lq, vd = (log_q if use_log_q else None), (valid if use_valid else None)
    got = jax.jit(losses.in_batch_softmax_loss, static_argnums=(4, 5))(
        jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids),
        None if lq is None else jnp.asarray(lq), temperature, gamma,
        None if vd is None else jnp.asarray(vd),
    )
    want = _np_in_batch(u, v, ids, lq, temperature, gamma, vd)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    if use_valid:
        assert np.all(np.asarray(got)[~valid] == 0.0)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_in_batch_sharded_equals_single_device(axis_type):
    u, v, ids, log_q, valid = _in_batch_data(seed=2, b=32)

    def mean_loss(u, v, ids, log_q, valid):
        return jnp.mean(losses.in_batch_softmax_loss(u, v, ids, log_q, 0.5, 2.0, valid))

    fn = jax.jit(jax.value_and_grad(mean_loss, argnums=(0, 1)))
    per_example = jax.jit(lambda *a: losses.in_batch_softmax_loss(*a[:4], 0.5, 0.0, a[4]))
    inputs = tuple(map(jnp.asarray, (u, v, ids, log_q, valid)))
    want_val, want_grads = fn(*inputs)
    want_rows = per_example(*inputs)

    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    sharded = jax.device_put(inputs, NamedSharding(mesh, P("data")))
    assert len(sharded[0].sharding.device_set) == 8 and not sharded[0].sharding.is_fully_replicated
    got_val, got_grads = fn(*sharded)
    got_rows = per_example(*sharded)

    # Rows must see the global batch: a per-shard softmax would differ by far more than 1e-5.
    np.testing.assert_allclose(np.asarray(got_rows), np.asarray(want_rows), atol=1e-5)
    np.testing.assert_allclose(float(got_val), float(want_val), atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)
    assert float(jnp.abs(want_grads[1]).max()) > 1e-3  # gradients are not trivially zero


def test_in_batch_gradient_finite_with_invalid_rows_and_fractional_gamma():
    u, v, ids, log_q, valid = _in_batch_data()
    g = jax.grad(lambda u: losses.in_batch_softmax_loss(u, v, ids, log_q, 1.0, 0.5, valid).sum())(u)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[~valid] == 0.0)


def test_negative_sampling_probs():
    count = np.array([100, 8, 0, 1, 27])
    pop = losses.negative_sampling_probs(count, "popularity", alpha=1 / 3)
    # weights max(count, 1)^(1/3) for ids 1..4 = 2, 1, 1, 3 (padding count 100 ignored) -> / 7
    np.testing.assert_allclose(pop, [0, 2 / 7, 1 / 7, 1 / 7, 3 / 7])
    np.testing.assert_allclose(losses.negative_sampling_probs(count, "uniform", 1.0), [0, .25, .25, .25, .25])
    with pytest.raises(ValueError):
        losses.negative_sampling_probs(count, "zipf", 1.0)


def test_sample_negatives_follows_distribution_and_never_returns_padding():
    probs = losses.negative_sampling_probs(np.array([0, 50, 1, 0, 10, 200, 3, 7]), "popularity", 0.75)
    n = 200_000
    ids, log_q = jax.jit(losses.sample_negatives, static_argnums=1)(jax.random.key(0), n, jnp.asarray(probs))
    ids, log_q = np.asarray(ids), np.asarray(log_q)
    assert ids.dtype == np.int32 and ids.shape == (n,) and ids.min() >= 1 and ids.max() <= 7
    np.testing.assert_allclose(log_q, np.log(probs[ids]), rtol=1e-5)
    observed = np.bincount(ids, minlength=8)[1:]
    chi2 = stats.chisquare(observed, probs[1:] * n).statistic
    assert chi2 < stats.chi2.ppf(0.999, df=6)  # fixed seed: deterministic
    assert observed[2] > 0  # the zero-count item (id 3) is still sampled thanks to the floor


def test_sample_negatives_ignores_padding_mass_and_renormalises():
    ids, log_q = losses.sample_negatives(jax.random.key(1), 5000, jnp.array([0.5, 0.25, 0.25]))
    assert int(jnp.min(ids)) == 1
    np.testing.assert_allclose(np.asarray(log_q), np.log(0.5), rtol=1e-6)


def _run_steps(state, id_batches, lr):
    step_fn = jax.jit(losses.update_frequency, static_argnames="lr")
    for t, batch in enumerate(id_batches):
        state = step_fn(state, jnp.asarray(batch, jnp.int32), t, lr=lr)
    return state


def test_streaming_frequency_periodic_item_gets_delta_four():
    h = 64
    batches = [[5, 0, 0] if t % 4 == 0 else [6, 0, 0] for t in range(60)]  # 5 every 4 steps, 6 else
    state = _run_steps(losses.init_frequency_state(h), batches, lr=0.05)
    np.testing.assert_allclose(float(state.delta[5]), 4.0, rtol=1e-6)
    np.testing.assert_allclose(float(state.delta[6]), 4 / 3, rtol=0.05)  # gaps 1, 1, 2: mean 4/3
    log_q = losses.estimated_log_q(state, jnp.array([5, 7]))
    np.testing.assert_allclose(np.asarray(log_q), [-np.log(4.0), 0.0], rtol=1e-5)  # 7 never seen
    assert float(state.delta[0]) == 0.0  # padding never updates bucket 0


def test_streaming_frequency_converges_with_random_gaps():
    def scan_steps(present):  # present [T] bool: item 9 is in the batch at step t
        def body(state, x):
            t, p = x
            return losses.update_frequency(state, jnp.where(p, 9, 0)[None], t, lr=0.01), state.delta[9]
        steps = jnp.arange(present.shape[0], dtype=jnp.int32)
        return jax.lax.scan(body, losses.init_frequency_state(16), (steps, present))

    present = jax.random.bernoulli(jax.random.key(3), 0.25, (8000,))  # mean gap 4
    state, trace = jax.jit(scan_steps)(present)
    assert abs(float(state.delta[9]) - 4.0) < 0.75
    assert abs(float(jnp.mean(trace[-4000:])) - 4.0) < 0.3


def test_streaming_frequency_duplicates_valid_and_collisions():
    h = 10
    s0 = losses.init_frequency_state(h)
    s1 = losses.update_frequency(s0, jnp.array([3, 3, 3, 4]), 0)
    dup = losses.update_frequency(s1, jnp.array([3, 3, 13, 4, 8]), 5, valid=jnp.array([1, 1, 1, 1, 0], bool))
    once = losses.update_frequency(s1, jnp.array([3, 4]), 5)
    for a, b in zip(dup, once):  # repeats and the colliding id 13 (= 3 mod 10) count once
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(dup.last_step[8]) == -1  # masked row ignored
    np.testing.assert_allclose(np.asarray(dup.delta)[[3, 4]], [5.0, 5.0])
