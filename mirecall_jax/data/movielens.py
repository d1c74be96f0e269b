"""MovieLens readers (ml-100k, ml-1m, ml-latest family) and the `::` layout MovieTweetings shares with ml-1m.

The variant is detected from the files in `data.path`, because the releases differ in everything
(separators, encodings, headers, where genres live) while the config only says "movielens":

  ml-100k   u.data   (tab: user item rating ts)   u.item (pipe, latin-1, 19 genre 0/1 flags), u.genre
  ml-1m     ratings.dat (user::movie::rating::ts)  movies.dat (movie::title::Genre|Genre), latin-1
  ml-latest ratings.csv (header userId,movieId,rating,timestamp)  movies.csv (quoted titles),
            optional tags.csv (userId,movieId,tag,timestamp); also ml-latest-small, ml-20m, ml-25m, ml-32m

Ratings are read as implicit feedback: the rating value is not parsed or checked. Genres become item
tags and the first genre the item's category; metadata files are optional (no file -> no ItemTable).
"""

from __future__ import annotations

import collections
import os

from mirecall_jax.data.events import BadRowPolicy, DataError, EventLog, ItemTable
from mirecall_jax.data.textio import (
    DelimitedFile,
    EventColumns,
    ItemRows,
    optional_file,
    require_dir,
    require_file,
    split_tags,
)

# Genre order of ml-100k's u.item flags, used when u.genre is absent (it is part of the release).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRE = ("unknown", "(no genres listed)")  # placeholders the releases use for "no genre"

# variant -> (required ratings file, optional metadata files), checked in this order.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ml-100k": ("u.data", ("u.item", "u.genre")),
    "ml-1m": ("ratings.dat", ("movies.dat",)),
    "ml-latest": ("ratings.csv", ("movies.csv", "tags.csv")),
}


# ---------------------------------------------------------------------------------- `::` layout
def read_colon_ratings(path: str, policy: BadRowPolicy, encoding: str) -> EventColumns:
    """`user::movie::rating::ts` (MovieTweetings, ml-1m)."""
    events = EventColumns(policy, "user_id", "movie_id", "timestamp")
    rows = DelimitedFile(path, "::", policy, columns=("user_id", "movie_id", "rating", "timestamp"), encoding=encoding)
    add, path = events.add, rows.path
    for line, (user, movie, _rating, ts) in rows:
        add(path, line, user, movie, ts)
    return events


def read_colon_movies(path: str, policy: BadRowPolicy, encoding: str) -> ItemTable:
    """`movie::Title (Year)::Genre|Genre` (MovieTweetings, ml-1m); genres may be empty."""
    items = ItemRows(policy, tags=True, category=True)
    rows = DelimitedFile(path, "::", policy, columns=("movie_id", "title", "genres"), encoding=encoding)
    for line, (movie, _title, genres) in rows:
        tags = split_tags(genres, "|", _NO_GENRE)
        items.add(movie, tags=tags, category=tags[0] if tags else "", path=rows.path, line=line, field="movie_id")
    return items.table()


# --------------------------------------------------------------------------------------- detection
def detect_variant(directory: str) -> str:
    """Which MovieLens release `directory` holds, from the ratings file present."""
    found = [v for v, (ratings, _) in VARIANTS.items() if os.path.isfile(os.path.join(directory, ratings))]
    expected = ", ".join(f"{ratings} ({v})" for v, (ratings, _) in VARIANTS.items())
    if not found:
        raise DataError(f"{directory}: expected a MovieLens ratings file, one of {expected}; found none")
    if len(found) > 1:
        raise DataError(f"{directory}: expected exactly one MovieLens release, found files of {found}")
    return found[0]


def _layout(data_cfg) -> tuple[str, list[str]]:
    """(variant, files to read): the ratings file first, then the metadata files present."""
    directory = require_dir(data_cfg.path)
    variant = detect_variant(directory)
    ratings, optional = VARIANTS[variant]
    found = [optional_file(os.path.join(directory, name)) for name in optional]
    return variant, [require_file(os.path.join(directory, ratings))] + [f for f in found if f]


def movielens_files(data_cfg) -> list[str]:
    return _layout(data_cfg)[1]


def read_movielens(data_cfg) -> EventLog:
    variant, sources = _layout(data_cfg)
    policy = BadRowPolicy(data_cfg.on_bad_row)
    ratings = sources[0]
    meta = {os.path.basename(p): p for p in sources[1:]}
    if variant == "ml-100k":
        events = _read_100k_ratings(ratings, policy)
        items = _read_100k_items(meta["u.item"], meta.get("u.genre"), policy) if "u.item" in meta else None
    elif variant == "ml-1m":
        events = read_colon_ratings(ratings, policy, "latin-1")
        items = read_colon_movies(meta["movies.dat"], policy, "latin-1") if "movies.dat" in meta else None
    else:
        events = _read_latest_ratings(ratings, policy)
        items = _read_latest_items(meta.get("movies.csv"), meta.get("tags.csv"), policy)
    return events.to_log(sources, items)


# ----------------------------------------------------------------------------------------- ml-100k
def _read_100k_ratings(path: str, policy: BadRowPolicy) -> EventColumns:
    events = EventColumns(policy, "user_id", "item_id", "timestamp")
    rows = DelimitedFile(path, "\t", policy, columns=("user_id", "item_id", "rating", "timestamp"), encoding="latin-1")
    for line, (user, item, _rating, ts) in rows:
        events.add(rows.path, line, user, item, ts)
    return events


def _read_100k_genres(path: str | None, policy: BadRowPolicy) -> tuple[str, ...]:
    if path is None:
        return ML100K_GENRES
    rows = DelimitedFile(path, "|", policy, columns=("genre", "genre_id"), encoding="latin-1")
    return tuple(name.strip() for _, (name, _id) in rows)  # file order is flag order


def _read_100k_items(path: str, genre_path: str | None, policy: BadRowPolicy) -> ItemTable:
    genres = _read_100k_genres(genre_path, policy)
    fixed = ("item_id", "title", "release_date", "video_release_date", "imdb_url")
    rows = DelimitedFile(path, "|", policy, columns=fixed + genres, encoding="latin-1")
    items = ItemRows(policy, tags=True, category=True)
    for line, fields in rows:
        flags = fields[len(fixed) :]
        bad = next((i for i, f in enumerate(flags) if f.strip() not in ("0", "1")), None)
        if bad is not None:
            policy.bad("bad_genre_flag", rows.path, line, genres[bad], "0 or 1", got=flags[bad])
            continue
        tags = [g for g, f in zip(genres, flags) if f.strip() == "1" and g not in _NO_GENRE]
        items.add(fields[0], tags=tags, category=tags[0] if tags else "", path=rows.path, line=line)
    return items.table()


# --------------------------------------------------------------------------------------- ml-latest
def _read_latest_ratings(path: str, policy: BadRowPolicy) -> EventColumns:
    events = EventColumns(policy, "userId", "movieId", "timestamp")
    # No field of ratings.csv is ever quoted, so a plain split (faster than the csv module) is exact.
    rows = DelimitedFile(path, ",", policy, columns=("userId", "movieId", "rating", "timestamp"), header=True)
    for line, (user, movie, _rating, ts) in rows:
        events.add(rows.path, line, user, movie, ts)
    return events


def _read_latest_items(movies: str | None, tags: str | None, policy: BadRowPolicy) -> ItemTable | None:
    """movies.csv genres first, then tags.csv user tags by how many times the movie got them.

    Ties keep the order in which tags first appear; a user tag equal to a genre is not repeated.
    Movies that only appear in tags.csv get a row too (no genres, category "").
    """
    if movies is None and tags is None:
        return None
    items = ItemRows(policy, tags=True, category=movies is not None)
    if movies is not None:
        rows = DelimitedFile(movies, ",", policy, columns=("movieId", "title", "genres"), header=True, quoted=True)
        for line, (movie, _title, genres) in rows:
            g = split_tags(genres, "|", _NO_GENRE)
            items.add(movie, tags=g, category=g[0] if g else "", path=rows.path, line=line, field="movieId")
    if tags is not None:
        counts: dict[str, collections.Counter[str]] = {}
        rows = DelimitedFile(tags, ",", policy, columns=("userId", "movieId", "tag", "timestamp"), header=True, quoted=True)
        for line, (_user, movie, tag, _ts) in rows:
            movie, tag = movie.strip(), tag.strip()
            if not movie:
                policy.bad("empty_id", rows.path, line, "movieId", "a non-empty movie id", got=movie)
            elif not tag:
                policy.bad("empty_tag", rows.path, line, "tag", "a non-empty tag", got=tag)
            else:
                counts.setdefault(movie, collections.Counter())[tag] += 1
        for movie, counter in counts.items():
            row = items.index.get(movie)
            if row is None:
                row = items.add(movie, duplicate_is_bad=False)
            have = items.tags[row]
            have.extend(t for t, _ in counter.most_common() if t not in have)  # stable: ties keep first-seen order
    return items.table()
