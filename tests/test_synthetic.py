"""The synthetic log: deterministic by seed, and the planted structure is really there."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mirecall_jax.config import synthetic_config
from mirecall_jax.data.synthetic import generate_event_log


def small_cfg(**overrides):
    cfg = synthetic_config()
    cfg.num_users, cfg.num_items, cfg.num_topics = 300, 2000, 20
    cfg.num_uploaders, cfg.num_tags = 200, 200
    cfg.update(overrides)
    return cfg


def ids(names: np.ndarray, prefix: str) -> np.ndarray:
    return np.char.lstrip(names.astype(str), prefix).astype(np.int64)  # "v17" -> 17


@pytest.fixture(scope="module")
def log():
    return generate_event_log(small_cfg(), seed=3)


def test_same_seed_same_log_other_seed_differs():
    a, b, c = (generate_event_log(small_cfg(), s) for s in (7, 7, 8))
    for name in ("user", "item", "timestamp", "user_topics"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("uploader", "tags", "topic"):
        np.testing.assert_array_equal(getattr(a.items, name), getattr(b.items, name))
    assert len(a.item) != len(c.item) or not np.array_equal(a.item, c.item)
    assert not np.array_equal(a.user_topics, c.user_topics)
    assert not np.array_equal(a.items.topic, c.items.topic)


def test_shapes_ids_and_lengths(log):
    cfg = small_cfg()
    assert log.user.dtype.kind == log.item.dtype.kind == "U" and log.timestamp.dtype == np.int64
    assert log.sources == [] and log.split is None
    assert str(log.user[0]).startswith("u") and str(log.item[0]).startswith("v")
    t = log.items
    np.testing.assert_array_equal(t.item, [f"v{i}" for i in range(cfg.num_items)])
    np.testing.assert_array_equal(t.category, [f"t{x}" for x in t.topic])
    assert t.topic.dtype == np.int32 and t.topic.min() >= 0 and t.topic.max() < cfg.num_topics
    assert all(str(u).startswith("up") for u in t.uploader[:50]) and str(t.tags[0]).startswith("tag")
    np.testing.assert_array_equal(np.diff(t.tag_offsets), cfg.tags_per_item)
    tags = ids(t.tags, "tag").reshape(cfg.num_items, cfg.tags_per_item)
    assert (np.diff(np.sort(tags, axis=1), axis=1) > 0).all(), "an item's tags must be distinct"
    assert tags.max() < cfg.num_tags
    lengths = np.bincount(ids(log.user, "u"), minlength=cfg.num_users)
    assert lengths.min() >= cfg.min_seq_len and lengths.max() <= cfg.max_seq_len
    assert log.user_topics.shape == (cfg.num_users, cfg.max_interests) and log.user_topics.dtype == np.int32
    np.testing.assert_array_equal(log.user_topics_user, [f"u{i}" for i in range(cfg.num_users)])


def test_emitted_in_time_order_users_interleave_and_time_increases_per_user(log):
    assert (np.diff(log.timestamp) >= 0).all()
    u = ids(log.user, "u")
    assert (u[1:] != u[:-1]).mean() > 0.5, "rows should interleave users, not come in per-user blocks"
    order = np.lexsort((np.arange(len(u)), u))  # per user, in file order
    same_user = u[order][1:] == u[order][:-1]
    assert (np.diff(log.timestamp[order])[same_user] > 0).all()


def test_watches_follow_planted_interests(log):
    cfg = small_cfg()
    u, topic = ids(log.user, "u"), log.items.topic[ids(log.item, "v")]
    planted = log.user_topics  # [U, K], -1 padded, by decreasing weight
    counts = (planted >= 0).sum(axis=1)
    assert set(np.unique(counts)) == set(range(1, cfg.max_interests + 1))
    assert ((planted >= 0)[:, :-1] >= (planted >= 0)[:, 1:]).all(), "padding must come last"
    for row in planted:
        real = row[row >= 0]
        assert len(np.unique(real)) == len(real)
    on_topic = (planted[u] == topic[:, None]).any(axis=1)
    per_user = np.bincount(u, on_topic) / np.bincount(u)
    assert per_user.mean() >= 1 - cfg.noise - 0.02
    assert per_user.min() > 0.6
    # Every planted interest gets watched, and the heaviest one more than the lightest on average.
    multi = np.flatnonzero(counts >= 2)
    first = np.bincount(u, topic == planted[u, 0], minlength=cfg.num_users)[multi]
    last_topic = planted[np.arange(cfg.num_users), counts - 1]
    last = np.bincount(u, topic == last_topic[u], minlength=cfg.num_users)[multi]
    assert first.mean() > 1.5 * last.mean()


def test_interest_chain_is_sticky_with_switch_prob(log):
    cfg = small_cfg()
    u, topic = ids(log.user, "u"), log.items.topic[ids(log.item, "v")]
    order = np.lexsort((log.timestamp, u))
    u, topic = u[order], topic[order]
    n_interests = (log.user_topics >= 0).sum(axis=1)
    pair = (u[1:] == u[:-1]) & (n_interests[u[1:]] >= 2)
    stay = (topic[1:] == topic[:-1])[pair].mean()
    expected = (1 - cfg.noise) ** 2 * (1 - cfg.switch_prob)  # both on-interest and no switch
    assert abs(stay - expected) < 0.05, (stay, expected)


def test_uploaders_specialise():
    cfg = small_cfg()
    t = generate_event_log(cfg, seed=1).items
    up = ids(t.uploader, "up")
    topics_per_uploader = [len(np.unique(t.topic[up == k])) for k in np.unique(up)]
    assert max(topics_per_uploader) <= cfg.uploader_topics
    assert max(topics_per_uploader) == cfg.uploader_topics  # the bound is reached, not trivially 1
    assert len(np.unique(up)) > 0.9 * cfg.num_uploaders  # uploads are spread over the uploaders


def test_tags_are_topic_correlated(log):
    cfg = small_cfg()
    t = log.items
    tags = ids(t.tags, "tag").reshape(cfg.num_items, cfg.tags_per_item)

    def purity(topic: np.ndarray) -> float:  # share of tag draws inside each topic's 20 most used tags
        c = np.zeros((cfg.num_topics, cfg.num_tags))
        np.add.at(c, (np.repeat(topic, cfg.tags_per_item), tags.ravel()), 1)
        return np.sort(c, axis=1)[:, -20:].sum() / c.sum()

    shuffled = np.random.default_rng(0).permutation(t.topic)
    assert purity(t.topic) >= 1 - cfg.tag_noise - 0.03
    assert purity(shuffled) < 0.4


def test_popularity_is_skewed_by_alpha():
    def top_share(alpha: float) -> float:  # share of on-topic watches going to each topic's top video
        lg = generate_event_log(small_cfg(popularity_alpha=alpha, noise=0.0), seed=2)
        item = ids(lg.item, "v")
        cnt = np.bincount(item, minlength=2000)
        topic = lg.items.topic
        top = sum(cnt[topic == k].max() for k in range(20))
        return top / cnt.sum()

    flat, skewed = top_share(0.0), top_share(1.5)
    assert flat < 0.05 and skewed > 0.3


def test_default_size_is_fast():
    cfg = synthetic_config()
    t0 = time.perf_counter()
    lg = generate_event_log(cfg, seed=0)
    elapsed = time.perf_counter() - t0
    assert len(lg.user) >= cfg.num_users * cfg.min_seq_len
    assert elapsed < 2.0, f"default synthetic log took {elapsed:.2f}s"
