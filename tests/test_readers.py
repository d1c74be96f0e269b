"""Readers: every format on small files written here, every kind of bad input, and the real files.

Fixtures are written byte for byte into tmp_path so encodings, separators and line numbers are exact.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mirecall_jax.config import data_config
from mirecall_jax.data.events import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, DataError, EventLog
from mirecall_jax.data.readers import FORMATS, READERS, read_event_log, source_files

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cfg(fmt: str, path, on_bad_row: str = "error", **csv):
    c = data_config()
    c.format, c.path, c.on_bad_row = fmt, str(path), on_bad_row
    for k, v in csv.items():
        setattr(c.csv, k, v)
    return c


def write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def tags_of(log: EventLog) -> dict[str, list[str]]:
    t = log.items
    return {m: list(t.tags[t.tag_offsets[i] : t.tag_offsets[i + 1]]) for i, m in enumerate(t.item)}


def assert_str_array(a: np.ndarray, expected: list[str]):
    assert a.dtype.kind == "U", a.dtype
    assert a.tolist() == expected


# ------------------------------------------------------------------------------------ movietweetings
MT_RATINGS = "1::0104257::8::1364690142\n2::1074638::7::1365029107\n1::0000260::5::978300760.0\n"
MT_MOVIES = (
    "0104257::A Few Good Men (1992)::Crime|Drama|Mystery\n"
    "0000260::Fantômas - À l'ombre de la guillotine (1913)::\n"
    "1074638::Skyfall (2012)::Action|Adventure|Thriller\n"
    "9999999::Never Rated, Long Title: The Sequel (2000)::Drama\n"
)


def movietweetings_dir(tmp_path: Path, ratings: str | bytes = MT_RATINGS, movies: str | bytes | None = MT_MOVIES) -> Path:
    write(tmp_path / "ratings.dat", ratings)
    if movies is not None:
        write(tmp_path / "movies.dat", movies)
    return tmp_path


def test_movietweetings(tmp_path):
    log = read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path)))
    assert_str_array(log.user, ["1", "2", "1"])
    assert_str_array(log.item, ["0104257", "1074638", "0000260"])  # leading zeros kept
    assert log.timestamp.dtype == np.int64
    assert log.timestamp.tolist() == [1364690142, 1365029107, 978300760]  # integral float accepted
    assert log.split is None and log.bad_rows == {}
    assert log.sources == [str(tmp_path / "ratings.dat"), str(tmp_path / "movies.dat")]
    assert log.sources == source_files(cfg("movietweetings", tmp_path))
    items = log.items
    assert_str_array(items.item, ["0104257", "0000260", "1074638", "9999999"])  # unrated movie kept
    assert items.category.tolist() == ["Crime", "", "Action", "Drama"]
    assert items.tag_offsets.tolist() == [0, 3, 3, 6, 7]
    assert items.tags.tolist() == ["Crime", "Drama", "Mystery", "Action", "Adventure", "Thriller", "Drama"]
    assert items.uploader is None


def test_movietweetings_without_movies_file(tmp_path):
    log = read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path, movies=None)))
    assert log.items is None and len(log.user) == 3
    assert log.sources == [str(tmp_path / "ratings.dat")]


# ---------------------------------------------------------------------------------------- movielens
ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Café au lait (1993)|01-Jan-1993||http://y|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "3|GoldenEye (1995)|01-Jan-1995||http://z|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
)


def test_ml100k_standard_genres(tmp_path):
    write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n")
    write(tmp_path / "u.item", ML100K_ITEM, "latin-1")
    log = read_event_log(cfg("movielens", tmp_path))
    assert_str_array(log.user, ["196", "186"])
    assert_str_array(log.item, ["242", "302"])
    assert log.timestamp.tolist() == [881250949, 891717742]
    assert log.items.item.tolist() == ["1", "2", "3"]
    # "unknown" is ml-100k's placeholder for "no genre": no tag, category "" (= unknown).
    assert tags_of(log) == {"1": ["Animation", "Children's", "Comedy"], "2": [], "3": ["Action", "Adventure", "Thriller"]}
    assert log.items.category.tolist() == ["Animation", "", "Action"]


def test_ml100k_genre_names_from_u_genre(tmp_path):
    write(tmp_path / "u.data", "1\t1\t5\t874965758\n")
    write(tmp_path / "u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|0|1|1\n", "latin-1")
    write(tmp_path / "u.genre", "unknown|0\nKids|1\nFunny|2\n\n")
    log = read_event_log(cfg("movielens", tmp_path))
    assert tags_of(log) == {"1": ["Kids", "Funny"]}
    assert log.sources == [str(tmp_path / n) for n in ("u.data", "u.item", "u.genre")]


def test_ml1m_latin1(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::1357::5::978298709\n")
    write(tmp_path / "movies.dat", "1193::Café Flesh (1982)::Drama|Musical\n1357::Shine (1996)::Drama|Romance\n", "latin-1")
    log = read_event_log(cfg("movielens", tmp_path))
    assert_str_array(log.user, ["1", "2"])
    assert_str_array(log.item, ["1193", "1357"])
    assert log.timestamp.tolist() == [978300760, 978298709]
    assert tags_of(log) == {"1193": ["Drama", "Musical"], "1357": ["Drama", "Romance"]}
    assert log.items.category.tolist() == ["Drama", "Drama"]


def test_ml_latest_with_tags(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,3.5,964982224\n")
    write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Grumpier Old Men, The (1995)",Comedy\n'
        '5,"Quote ""Inside"" (1999)",(no genres listed)\n',
    )
    write(
        tmp_path / "tags.csv",
        "userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,fun,2\n3,1,fun,3\n4,1,Animation,4\n"
        '5,3,"moldy, old",5\n6,7,orphan,6\n7,1,pixar,7\n8,1,fun,8\n9,1,cute,9\n',
    )
    log = read_event_log(cfg("movielens", tmp_path))
    assert_str_array(log.user, ["1", "1", "2"])
    assert_str_array(log.item, ["1", "3", "1"])
    assert log.timestamp.tolist() == [964982703, 964981247, 964982224]
    # genres first, then user tags most frequent first (ties: first seen), genre duplicates dropped;
    # a movie only in tags.csv gets a row.
    assert tags_of(log) == {
        "1": ["Adventure", "Animation", "fun", "pixar", "cute"],
        "3": ["Comedy", "moldy, old"],
        "5": [],
        "7": ["orphan"],
    }
    assert log.items.category.tolist() == ["Adventure", "Comedy", "", ""]
    assert log.sources == [str(tmp_path / n) for n in ("ratings.csv", "movies.csv", "tags.csv")]


def test_movielens_layout_errors(tmp_path):
    write(tmp_path / "README.txt", "nothing here")
    with pytest.raises(DataError, match=r"u\.data \(ml-100k\), ratings\.dat \(ml-1m\), ratings\.csv \(ml-latest\)"):
        read_event_log(cfg("movielens", tmp_path))
    write(tmp_path / "u.data", "1\t1\t5\t874965758\n")
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DataError, match=r"exactly one MovieLens release.*ml-100k.*ml-latest"):
        read_event_log(cfg("movielens", tmp_path))


# ------------------------------------------------------------------------------------------ grocery
def test_grocery(tmp_path):
    write(tmp_path / "train.csv", "user_id\titem_id\ttime\n2177\t3\t965779200\n4161\t18\t1068249600\n2177\t18\t1068249600\n")
    write(
        tmp_path / "item_meta.csv",
        "item_id\ti_category\tr_complement\tr_substitute\n3\t0\t[18, 5]\t[]\n18\t21\t[]\t[3]\n5\t7\t[3]\t[18, 3]\n",
    )
    log = read_event_log(cfg("grocery", tmp_path))
    assert_str_array(log.user, ["2177", "4161", "2177"])
    assert_str_array(log.item, ["3", "18", "18"])
    assert log.timestamp.tolist() == [965779200, 1068249600, 1068249600]
    assert log.items.item.tolist() == ["3", "18", "5"]
    assert log.items.category.tolist() == ["0", "21", "7"]
    assert log.items.uploader.tolist() == ["0", "21", "7"]
    assert log.items.tags is None


# ------------------------------------------------------------------------------------------ comirec
def comirec_dir(tmp_path: Path, name: str = "book") -> Path:
    write(tmp_path / f"{name}_train.txt", "0,10,100\n0,11,101\n1,10,102\n")
    write(tmp_path / f"{name}_valid.txt", "2,12,103\n")
    write(tmp_path / f"{name}_test.txt", "3,10,104\n3,12,105\n")
    return tmp_path


def test_comirec_split_codes(tmp_path):
    comirec_dir(tmp_path)
    write(tmp_path / "book_item_cate.txt", "10,1\n11,2\n12,1\n13,3\n")
    log = read_event_log(cfg("comirec", tmp_path))
    assert_str_array(log.user, ["0", "0", "1", "2", "3", "3"])
    assert_str_array(log.item, ["10", "11", "10", "12", "10", "12"])
    assert log.timestamp.tolist() == [100, 101, 102, 103, 104, 105]
    assert log.split.dtype == np.int8
    assert log.split.tolist() == [SPLIT_TRAIN] * 3 + [SPLIT_VALID] + [SPLIT_TEST] * 2
    assert log.items.item.tolist() == ["10", "11", "12", "13"]
    assert log.items.category.tolist() == log.items.uploader.tolist() == ["1", "2", "1", "3"]


def test_comirec_name_detection(tmp_path):
    with pytest.raises(DataError, match="found none"):
        read_event_log(cfg("comirec", tmp_path))
    comirec_dir(tmp_path, "book")
    write(tmp_path / "taobao_train.txt", "0,1,2\n")  # no valid/test: not a candidate
    assert read_event_log(cfg("comirec", tmp_path)).items is None
    comirec_dir(tmp_path, "taobao")
    with pytest.raises(DataError, match=r"found \['book', 'taobao'\]"):
        read_event_log(cfg("comirec", tmp_path))
    c = cfg("comirec", tmp_path)
    c.comirec_name = "taobao"
    assert read_event_log(c).sources == [str(tmp_path / f"taobao_{s}.txt") for s in ("train", "valid", "test")]


# -------------------------------------------------------------------------------------- csv/parquet
SIDE = dict(uploader_col="creator", tags_col="tags", category_col="cat")


def test_csv_with_header(tmp_path):
    write(
        tmp_path / "events.csv",
        'ts,uid,vid,creator,tags,cat\n5,u1,007,c9,"a|b, c",news\n6,u2,008,c8,,sport\n7,u1,007,OTHER,x,other\n',
    )
    log = read_event_log(cfg("csv", tmp_path, user_col="uid", item_col="vid", time_col="ts", **SIDE))
    assert_str_array(log.user, ["u1", "u2", "u1"])
    assert_str_array(log.item, ["007", "008", "007"])
    assert log.timestamp.tolist() == [5, 6, 7]
    # first occurrence of each item gives its side columns
    assert log.items.item.tolist() == ["007", "008"]
    assert log.items.uploader.tolist() == ["c9", "c8"]
    assert log.items.category.tolist() == ["news", "sport"]
    assert tags_of(log) == {"007": ["a", "b, c"], "008": []}


def test_csv_headerless_tab(tmp_path):
    write(tmp_path / "log.tsv", "u1\t01\t100\nu2\t02\t200\n")
    c = cfg("csv", tmp_path, events_file="log.tsv", delimiter="\\t", header=False, user_col="0", item_col="1", time_col="2")
    log = read_event_log(c)
    assert_str_array(log.user, ["u1", "u2"])
    assert_str_array(log.item, ["01", "02"])
    assert log.timestamp.tolist() == [100, 200]
    assert log.items is None
    c.csv.time_col = "5"
    with pytest.raises(DataError, match=r"log\.tsv:1: field 'column 5' expected a column at position 5"):
        read_event_log(c)


def test_csv_config_errors(tmp_path):
    write(tmp_path / "events.csv", "user_id,item_id,time\n1,2,3\n")
    with pytest.raises(DataError, match=r"events\.csv:1: field 'timestamp' expected a header column named 'timestamp'"):
        read_event_log(cfg("csv", tmp_path))
    with pytest.raises(DataError, match=r"user_col: expected a 0-based column position"):
        read_event_log(cfg("csv", tmp_path, header=False, time_col="2"))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "user": ["u1", "u2", None, "u1", "u3"],
            "item": pa.array([7, 8, 7, 9, 9], pa.int64()),
            "ts": ["10", "11.0", "12", "abc", "13"],
            "tags": [["x", "y"], [], ["z"], None, ["w", "w"]],
            "cat": ["a", "b", "c", "d", None],
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    c = cfg("parquet", tmp_path, "skip", events_file="events.parquet", user_col="user", item_col="item", time_col="ts",
            tags_col="tags", category_col="cat")  # fmt: skip
    log = read_event_log(c)
    assert_str_array(log.user, ["u1", "u2", "u3"])
    assert_str_array(log.item, ["7", "8", "9"])
    assert log.timestamp.tolist() == [10, 11, 13]
    assert log.bad_rows == {"empty_id": 1, "bad_timestamp": 1}
    assert tags_of(log) == {"7": ["x", "y"], "8": [], "9": ["w"]}
    assert log.items.category.tolist() == ["a", "b", ""]
    c.on_bad_row = "error"
    with pytest.raises(DataError, match=r"events\.parquet:3: field 'user' expected a non-empty user id"):
        read_event_log(c)
    c.csv.user_col = "nope"
    with pytest.raises(DataError, match=r"events\.parquet: field 'nope' expected a column named 'nope'"):
        read_event_log(c)


def test_parquet_timestamp_types(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    c = cfg("parquet", tmp_path, events_file="e.parquet", user_col="u", item_col="i", time_col="t")
    pq.write_table(pa.table({"u": ["a"], "i": ["b"], "t": pa.array([1_500_000_000_123], pa.timestamp("ms"))}), tmp_path / "e.parquet")
    assert read_event_log(c).timestamp.tolist() == [1_500_000_000]
    pq.write_table(pa.table({"u": ["a"], "i": ["b"], "t": [1.5]}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet:1: field 't' expected an integer timestamp, got 1\.5"):
        read_event_log(c)
    pq.write_table(pa.table({"u": ["a"], "i": ["b"], "t": [True]}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"field 't' expected an integer-convertible timestamp column, got 'bool'"):
        read_event_log(c)
    write(tmp_path / "e.parquet", b"not parquet")
    with pytest.raises(DataError, match=r"e\.parquet: expected a parquet file"):
        read_event_log(c)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "ratings, pattern",
    [
        ("1::0104257::8::1\n1::0104257::8\n", r"ratings\.dat:2: field 'timestamp' expected 4 columns separated by '::'"),
        ("1::0104257::8::1::9\n", r"ratings\.dat:1: expected 4 columns .*got '5 columns"),
        ("1::0104257::8::1\n\n1::0104257::8::abc\n", r"ratings\.dat:3: field 'timestamp' expected an integer timestamp, got 'abc'"),
        ("1::0104257::8::1.5\n", r"ratings\.dat:1: field 'timestamp' expected an integer timestamp, got '1\.5'"),
        ("1::0104257::8::99999999999999999999\n", r"ratings\.dat:1: field 'timestamp' expected an integer timestamp"),
        ("::0104257::8::1\n", r"ratings\.dat:1: field 'user_id' expected a non-empty user id"),
        ("1:: ::8::1\n", r"ratings\.dat:1: field 'movie_id' expected a non-empty item id"),
        (b"1::0104257::8::1\n1::01\xff::8::1\n", r"ratings\.dat:2: field 'movie_id' expected utf-8 text"),
        ("", r"ratings\.dat: expected a non-empty file"),
        ("\n\n", r"ratings\.dat: expected at least one data row"),
    ],
)
def test_bad_ratings_error_mode(tmp_path, ratings, pattern):
    with pytest.raises(DataError, match=pattern):
        read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path, ratings)))


@pytest.mark.parametrize(
    "movies, pattern",
    [
        (b"1::A (1990)::Drama\n2::B\xe9 (1991)::Drama\n", r"movies\.dat:2: field 'title' expected utf-8 text, got b'2::B\\xe9"),
        ("1::A (1990)::Drama\n1::A again (1990)::Drama\n", r"movies\.dat:2: field 'movie_id' expected each item listed once"),
        ("1::A (1990)\n", r"movies\.dat:1: field 'genres' expected 3 columns"),
    ],
)
def test_bad_movies_error_mode(tmp_path, movies, pattern):
    with pytest.raises(DataError, match=pattern):
        read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path, movies=movies)))


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"config\.data\.path: expected an existing directory, got '.*nowhere'"):
        read_event_log(cfg("movietweetings", tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"config\.data\.path: expected a directory"):
        read_event_log(cfg("grocery", ""))
    with pytest.raises(DataError, match=r"ratings\.dat: expected an existing file, got 'missing'"):
        read_event_log(cfg("movietweetings", tmp_path, "skip"))  # never skippable
    with pytest.raises(DataError, match=r"book_valid\.txt: expected an existing file"):
        c = cfg("comirec", tmp_path)
        c.comirec_name = "book"
        write(tmp_path / "book_train.txt", "1,2,3\n")
        read_event_log(c)


def test_header_mismatch(tmp_path):
    write(tmp_path / "train.csv", "user\titem\ttime\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"train\.csv:1: field 'header' expected columns \['user_id', 'item_id', 'time'\]"):
        read_event_log(cfg("grocery", tmp_path, "skip"))  # a wrong header is never skippable
    write(tmp_path / "train.csv", "user_id\titem_id\ttime\n")
    with pytest.raises(DataError, match=r"train\.csv: expected at least one data row"):
        read_event_log(cfg("grocery", tmp_path))


def test_bad_genre_flag(tmp_path):
    write(tmp_path / "u.data", "1\t1\t5\t874965758\n")
    write(tmp_path / "u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|0|1|2\n", "latin-1")
    write(tmp_path / "u.genre", "unknown|0\nKids|1\nFunny|2\n")
    with pytest.raises(DataError, match=r"u\.item:1: field 'Funny' expected 0 or 1, got '2'"):
        read_event_log(cfg("movielens", tmp_path))


def test_skip_mode_counts_by_reason(tmp_path):
    ratings = (
        b"1::0104257::8::1364690142\n"  # good
        b"2::0104257::8\n"  # wrong_column_count
        b"3::0104257::8::abc\n"  # bad_timestamp
        b"4::01\xff::8::5\n"  # undecodable
        b"::0104257::8::5\n"  # empty_id
        b"5::0000260::8::978300760.0\n"  # good
        b"6::0000260::7::7\r\n"  # good (CRLF)
    )
    movies = b"0104257::A (1990)::Drama\n0104257::dup (1990)::Drama\n0000260::\xff::\n"
    log = read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path, ratings, movies), "skip"))
    assert_str_array(log.user, ["1", "5", "6"])
    assert_str_array(log.item, ["0104257", "0000260", "0000260"])
    assert log.timestamp.tolist() == [1364690142, 978300760, 7]
    assert log.bad_rows == {"wrong_column_count": 1, "bad_timestamp": 1, "undecodable": 2, "empty_id": 1, "duplicate_item": 1}
    assert log.items.item.tolist() == ["0104257"]


def test_skip_mode_every_row_bad(tmp_path):
    with pytest.raises(DataError, match=r"expected at least one valid event row.*'bad_timestamp': 2"):
        read_event_log(cfg("movietweetings", movietweetings_dir(tmp_path, "1::2::3::x\n1::2::3::y\n"), "skip"))


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match=r"config\.data\.format: expected one of synthetic, movietweetings, .*parquet, got 'netflix'"):
        read_event_log(cfg("netflix", tmp_path))
    with pytest.raises(DataError, match="got 'netflix'"):
        source_files(cfg("netflix", tmp_path))
    assert set(FORMATS) == {"synthetic", *READERS} == {
        "synthetic", "movietweetings", "movielens", "grocery", "comirec", "csv", "parquet"
    }  # fmt: skip


def test_synthetic_dispatch():
    pytest.importorskip("mirecall_jax.data.synthetic", reason="mirecall_jax.data.synthetic not written yet")
    c = data_config()
    c.synthetic.num_users, c.synthetic.num_items = 50, 200
    assert source_files(c) == []
    log = read_event_log(c, seed=1)
    assert isinstance(log, EventLog) and len(log.user) > 0


# ------------------------------------------------------------------------------------------ real data
def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} not present")
    return path


def test_real_movietweetings():
    path = _shared("movietweetings-100k")
    t0 = time.perf_counter()
    log = read_event_log(cfg("movietweetings", path))
    seconds = time.perf_counter() - t0
    assert len(log.user) == 100_000
    assert len(np.unique(log.user)) == 16_554
    assert len(np.unique(log.item)) == 10_506
    assert log.user.dtype.kind == log.item.dtype.kind == "U"
    assert "0104257" in set(log.item.tolist())
    assert log.bad_rows == {}
    assert len(log.items.item) == 10_506
    assert int((np.diff(log.items.tag_offsets) == 0).sum()) == 66  # movies without a genre (README)
    assert (log.items.category == "").sum() == 66
    assert seconds < 5, seconds  # ~0.2 s normally; generous for loaded CI machines


def test_real_grocery():
    path = _shared("grocery")
    log = read_event_log(cfg("grocery", path))
    assert len(log.user) == 121_892
    assert len(np.unique(log.user)) == 14_681
    assert len(np.unique(log.item)) == 8_687
    assert log.bad_rows == {}
    assert len(np.unique(log.items.category)) == 57
    assert np.array_equal(log.items.uploader, log.items.category)



def test_csv_bad_rows_skip(tmp_path):
    data = (
        b"user_id,item_id,timestamp\n"
        b'u1,"i,1",10\n'  # good, quoted comma
        b"u2,i2\n"  # wrong_column_count
        b"u3,i\xff,12\n"  # undecodable
        b",,\n"  # empty_id (a row of empty fields, not a blank line)
        b"\n"  # blank: not a row
        b"u4,i4,1e3\n"  # good: integral
    )
    write(tmp_path / "events.csv", data)
    log = read_event_log(cfg("csv", tmp_path, "skip"))
    assert_str_array(log.user, ["u1", "u4"])
    assert_str_array(log.item, ["i,1", "i4"])
    assert log.timestamp.tolist() == [10, 1000]
    assert log.bad_rows == {"wrong_column_count": 1, "undecodable": 1, "empty_id": 1}


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (b"u2,i2\n", r"events\.csv:3: field 'timestamp' expected 3 columns"),
        (b"u3,i\xff,12\n", r"events\.csv:3: field 'item_id' expected utf-8 text"),
        (b",,\n", r"events\.csv:3: field 'user_id' expected a non-empty user id"),
        (b"u3,i3,soon\n", r"events\.csv:3: field 'timestamp' expected an integer timestamp, got 'soon'"),
        (b'u3,"i3,12\n', r"events\.csv:3: field 'timestamp' expected 3 columns"),  # unclosed quote eats the line
    ],
)
def test_csv_bad_rows_error(tmp_path, bad, pattern):
    write(tmp_path / "events.csv", b"user_id,item_id,timestamp\nu1,i1,10\n" + bad)
    with pytest.raises(DataError, match=pattern):
        read_event_log(cfg("csv", tmp_path))
