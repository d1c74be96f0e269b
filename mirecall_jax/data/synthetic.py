"""The built-in synthetic watch log, with planted multi-interest structure (data.format = "synthetic").

Generative story (all vectorised numpy, deterministic given `seed`):
  * Catalogue: every video has exactly one topic (topics get near-equal shares of the catalogue).
    Each uploader posts in `uploader_topics` distinct topics, and a video's uploader is drawn
    uniformly from the uploaders of its topic, so uploader ids carry topic signal. Each topic owns a
    pool of tags (a window over a shuffled tag list; neighbouring pools overlap by half) and a video
    draws `tags_per_item` distinct tags from its pool, each replaced by a uniform tag w.p. `tag_noise`.
  * Users: n ~ U{1..max_interests} distinct topics with Dirichlet(1) weights. The watch sequence is
    a Markov chain over those interests (stay w.p. 1 - switch_prob, else jump to another interest by
    weight); each watch is a Zipf(popularity_alpha) draw within the current topic, or w.p. `noise`
    a uniformly random video. Timestamps strictly increase per user.
  * Rows are emitted sorted by timestamp, so users interleave as in a real log.

Ground truth: `EventLog.user_topics` holds each user's planted topics by decreasing weight, padded
with -1; `ItemTable.topic` holds each video's topic (and `category` = "t{topic}").
"""

from __future__ import annotations

import numpy as np

from mirecall_jax.data.events import EventLog, ItemTable

_BASE_TIME = 1_600_000_000  # Unix seconds (Sept 2020); any fixed origin would do
_START_SPREAD = 30 * 86_400  # users start within a month of each other
_MEAN_GAP = 3_600  # mean seconds between two watches of one user


def _names(prefix: str, n: int) -> np.ndarray:
    width = len(prefix) + len(str(max(n - 1, 0)))  # tight dtype: numpy's default is U21+
    return np.char.add(prefix, np.arange(n).astype(str)).astype(f"U{width}")  # [n] str, "u0", "u1", ...


def _catalogue(cfg, rng: np.random.Generator):
    """Per-video topic [M], uploader [M] and tag ids [M, tags_per_item]."""
    M, T, U_up = cfg.num_items, cfg.num_topics, cfg.num_uploaders
    topic = (rng.permutation(M) % T).astype(np.int32)  # [M]; every topic gets >= 1 video as M >= T

    # Uploader topics: the first one is a permutation slot (covers every topic when U_up >= T), the
    # rest are distinct random others, via argsort of random keys over the remaining topics.
    k = min(cfg.uploader_topics, T)
    first = rng.permutation(T)[np.arange(U_up) % T]  # [U_up]
    others = np.argsort(rng.random((U_up, T - 1)), axis=1)[:, : k - 1] + 1  # [U_up, k-1] offsets 1..T-1
    up_topics = np.concatenate([first[:, None], (first[:, None] + others) % T], axis=1)  # [U_up, k]
    pair_up = np.repeat(np.arange(U_up), k)  # (uploader, topic) pairs, grouped by topic below
    pair_topic = up_topics.ravel()
    order = np.argsort(pair_topic, kind="stable")
    pair_up, per_topic = pair_up[order], np.bincount(pair_topic, minlength=T)  # [U_up*k], [T]
    start = np.concatenate([[0], np.cumsum(per_topic)[:-1]])
    pick = start[topic] + (rng.random(M) * per_topic[topic]).astype(np.int64)
    # A topic no uploader covers (only when num_uploaders * uploader_topics < num_topics) falls back
    # to a uniform uploader: specialisation cannot hold there anyway.
    uncovered = per_topic[topic] == 0
    uploader = np.where(uncovered, rng.integers(U_up, size=M), pair_up[np.minimum(pick, len(pair_up) - 1)])

    # Tags: pool of topic t = a window of `pool` tags starting at t * stride in a shuffled tag list.
    n_tags, per_item = cfg.num_tags, min(cfg.tags_per_item, cfg.num_tags)
    stride = max(1, n_tags // T)
    pool = min(n_tags, max(per_item + 1, 2 * stride))
    shuffled = rng.permutation(n_tags)
    slot = np.argsort(rng.random((M, pool)), axis=1)[:, :per_item]  # [M, per_item] distinct pool slots
    tags = shuffled[(topic[:, None] * stride + slot) % n_tags]  # [M, per_item], distinct per row
    noisy = rng.random(tags.shape) < cfg.tag_noise
    cand = np.where(noisy, rng.integers(n_tags, size=tags.shape), tags)
    # A uniform draw may collide with another tag of the same video; revert those rows to the pool
    # draw (distinct by construction). This touches a tiny fraction of rows.
    s = np.sort(cand, axis=1)
    dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
    tags = np.where(dup[:, None], tags, cand)
    return topic, uploader, tags


def _users(cfg, rng: np.random.Generator):
    """Per-user interest topics [U, K] (-1 padded, by decreasing weight) and weights [U, K]."""
    U, T = cfg.num_users, cfg.num_topics
    K = cfg.max_interests
    k_eff = min(K, T)
    n = rng.integers(1, k_eff + 1, size=U)  # [U] interest counts, uniform
    topics = np.argsort(rng.random((U, T)), axis=1)[:, :k_eff]  # [U, k_eff] distinct topics
    w = rng.gamma(1.0, size=(U, k_eff)) * (np.arange(k_eff)[None, :] < n[:, None])  # Dirichlet(1) via gammas
    w /= w.sum(axis=1, keepdims=True)
    order = np.argsort(-w, axis=1, kind="stable")  # decreasing weight; padding (w = 0) goes last
    w = np.take_along_axis(w, order, axis=1)
    topics = np.where(w > 0, np.take_along_axis(topics, order, axis=1), -1)
    pad = K - k_eff
    topics = np.pad(topics, ((0, 0), (0, pad)), constant_values=-1).astype(np.int32)  # [U, K]
    w = np.pad(w, ((0, 0), (0, pad)))  # [U, K]
    return topics, w, n


def _draw_index(cdf: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF sampling: cdf [U, K] ending at 1, r [U] uniform -> index [U]."""
    return np.minimum((cdf < r[:, None]).sum(axis=1), cdf.shape[1] - 1)


def _zipf_within_topic(topic: np.ndarray, popularity_alpha: float, rng: np.random.Generator):
    """A sampler drawing, for topic ids t [...], a video of topic t with Zipf popularity."""
    T = int(topic.max()) + 1
    by_topic = np.argsort(topic, kind="stable")  # videos grouped by topic; random order within it
    count = np.bincount(topic, minlength=T)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    rank = np.arange(len(topic)) - np.repeat(start, count)  # rank of each video within its topic
    weight = (rank + 1.0) ** -popularity_alpha
    cum = np.cumsum(weight)
    seg_total = np.add.reduceat(weight, start)  # [T] total weight per topic (no topic is empty)
    seg_before = cum[start] - weight[start]  # [T] cumulative weight before each topic
    topic_sorted = np.repeat(np.arange(T), count)
    # Shift each topic's normalised CDF by its topic id: the global array stays monotone, so one
    # searchsorted serves every topic at once.
    key = topic_sorted + (cum - seg_before[topic_sorted]) / seg_total[topic_sorted]  # [M]

    def draw(t: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(key, t + rng.random(t.shape), side="left")
        pos = np.clip(pos, start[t], start[t] + count[t] - 1)  # float round-off at segment ends
        return by_topic[pos]

    return draw


def generate_event_log(cfg, seed: int) -> EventLog:
    """The synthetic log for `cfg` (= config.data.synthetic), deterministic given `seed`."""
    if cfg.num_items < cfg.num_topics:
        raise ValueError(f"synthetic: num_items ({cfg.num_items}) must be >= num_topics ({cfg.num_topics})")
    if not 1 <= cfg.min_seq_len <= cfg.max_seq_len:
        raise ValueError(f"synthetic: need 1 <= min_seq_len <= max_seq_len, got {cfg.min_seq_len}, {cfg.max_seq_len}")
    rng = np.random.default_rng(seed)
    item_topic, item_uploader, item_tags = _catalogue(cfg, rng)
    user_topics, weights, n_int = _users(cfg, rng)
    U, L = cfg.num_users, cfg.max_seq_len

    # Interest chain: a loop over positions, vectorised across users.
    cdf = np.cumsum(weights, axis=1)  # [U, K]
    state = _draw_index(cdf, rng.random(U))  # [U] index into the user's interests
    switch = (rng.random((U, L)) < cfg.switch_prob) & (n_int[:, None] > 1)  # [U, L]
    jump_r = rng.random((U, L))
    states = np.empty((U, L), np.int64)
    rows = np.arange(U)
    for j in range(L):
        if j > 0:
            w_other = weights.copy()
            w_other[rows, state] = 0.0  # jump to a *different* interest, proportional to weight
            c = np.cumsum(w_other, axis=1)
            c /= np.maximum(c[:, -1:], 1e-12)
            state = np.where(switch[:, j], _draw_index(c, jump_r[:, j]), state)
        states[:, j] = state

    lengths = rng.integers(cfg.min_seq_len, cfg.max_seq_len + 1, size=U)  # [U]
    valid = np.arange(L)[None, :] < lengths[:, None]  # [U, L]
    uu = np.broadcast_to(rows[:, None], (U, L))[valid]  # [N] user of each event
    topic = user_topics[uu, states[valid]]  # [N]
    item = _zipf_within_topic(item_topic, cfg.popularity_alpha, rng)(topic)
    noisy = rng.random(len(item)) < cfg.noise
    item = np.where(noisy, rng.integers(cfg.num_items, size=len(item)), item)

    gaps = 1 + rng.exponential(_MEAN_GAP, size=(U, L)).astype(np.int64)  # >= 1 s: strictly increasing
    ts = _BASE_TIME + rng.integers(_START_SPREAD, size=U)[:, None] + np.cumsum(gaps, axis=1)  # [U, L]
    ts = ts[valid]
    order = np.argsort(ts, kind="stable")  # global time order; ties keep user order

    user_names, item_names = _names("u", U), _names("v", cfg.num_items)
    uploader_names, tag_names = _names("up", cfg.num_uploaders), _names("tag", cfg.num_tags)
    per_item = item_tags.shape[1]
    table = ItemTable(
        item=item_names,
        uploader=uploader_names[item_uploader],
        tag_offsets=np.arange(cfg.num_items + 1, dtype=np.int64) * per_item,
        tags=tag_names[item_tags.ravel()],
        category=np.char.add("t", item_topic.astype(str)),
        topic=item_topic.astype(np.int32),
    )
    return EventLog(
        user=user_names[uu[order]],
        item=item_names[item[order]],
        timestamp=ts[order].astype(np.int64),
        items=table,
        user_topics_user=user_names,
        user_topics=user_topics,
        sources=[],
    )
