"""Generic tabular readers: `csv` (any delimited text file) and `parquet`, driven by `config.data.csv`.

The mapping (`config.csv_config()`) names the user, item and integer-timestamp columns, and optionally
uploader, tags (`tag_separator`-joined text; in parquet also a list<string> column) and category
columns. Event files repeat an item on every interaction, so the item side table takes each item's
side columns from its *first* valid row; later rows for that item are not compared against it.

csv: with `header = True` the *_col values are column names; with `header = False` they are 0-based
positions written as strings ("0"). A one-character delimiter is parsed with the csv module (quoted
fields work); a longer one ("::") by a plain split. "\\t" (backslash-t, as typed on a command line)
means a tab. parquet: columns are looked up by name; `delimiter` and `header` do not apply, and bad-row
messages give the 1-based row number where text formats give the line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mirecall_jax.data.events import BadRowPolicy, DataError, EventLog, describe_bad_row
from mirecall_jax.data.textio import DelimitedFile, EventColumns, ItemRows, clean_tags, require_dir, require_file, split_tags

_ROLES = ("user_col", "item_col", "time_col", "uploader_col", "tags_col", "category_col")
_REQUIRED = ("user_col", "item_col", "time_col")


def events_path(data_cfg) -> str:
    """`data.csv.events_file` inside `data.path` (an absolute events_file is used as is)."""
    name = data_cfg.csv.events_file
    if not name:
        raise DataError("config.data.csv.events_file: expected a file name, got ''")
    if os.path.isabs(name):
        return require_file(name)
    return require_file(os.path.join(require_dir(data_cfg.path), name))


def csv_files(data_cfg) -> list[str]:
    return [events_path(data_cfg)]


def parquet_files(data_cfg) -> list[str]:
    return [events_path(data_cfg)]


def _mapping(data_cfg) -> dict[str, str]:
    """role -> configured column ("" = not used); required roles must be set."""
    cfg = data_cfg.csv
    cols = {role: str(getattr(cfg, role) or "").strip() for role in _ROLES}
    for role in _REQUIRED:
        if not cols[role]:
            raise DataError(f"config.data.csv.{role}: expected a column, got ''")
    if cols["tags_col"] and not cfg.tag_separator:
        raise DataError("config.data.csv.tag_separator: expected a non-empty separator when tags_col is set")
    return cols


class _TabularSink:
    """Event rows plus first-occurrence item side columns, shared by the csv and parquet readers."""

    def __init__(self, policy: BadRowPolicy, cols: dict[str, str], names: dict[str, str], tag_separator: str):
        self.events = EventColumns(policy, names["user_col"], names["item_col"], names["time_col"])
        self.has = {role: bool(cols[role]) for role in ("uploader_col", "tags_col", "category_col")}
        self.items = None
        if any(self.has.values()):
            self.items = ItemRows(
                policy, uploader=self.has["uploader_col"], tags=self.has["tags_col"], category=self.has["category_col"]
            )
        self.sep = tag_separator

    def add(self, path: str, line: int, user, item, ts, uploader=None, tags=None, category=None) -> None:
        if not self.events.add(path, line, user, item, ts):
            return
        item = self.events.item[-1]  # validated and stripped
        if self.items is None or item in self.items.index:
            return
        if tags is None:
            tag_list: Sequence[str] = ()
        elif isinstance(tags, str):
            tag_list = split_tags(tags, self.sep)
        else:  # parquet list<string>
            tag_list = clean_tags(tags)
        self.items.add(
            item,
            uploader="" if uploader is None else str(uploader),
            tags=tag_list,
            category="" if category is None else str(category),
            duplicate_is_bad=False,
        )

    def to_log(self, sources: list[str]) -> EventLog:
        return self.events.to_log(sources, self.items.table() if self.items is not None else None)


# --------------------------------------------------------------------------------------------- csv
def read_csv(data_cfg) -> EventLog:
    cfg = data_cfg.csv
    cols = _mapping(data_cfg)
    policy = BadRowPolicy(data_cfg.on_bad_row)
    path = events_path(data_cfg)
    delim = "\t" if cfg.delimiter == "\\t" else cfg.delimiter
    if not delim:
        raise DataError("config.data.csv.delimiter: expected a separator, got ''")
    rows = DelimitedFile(path, delim, policy, header=bool(cfg.header), quoted=len(delim) == 1)
    used = {role: c for role, c in cols.items() if c}
    if cfg.header:
        missing = [c for c in used.values() if c not in rows.columns]
        if missing:
            raise DataError(
                describe_bad_row(rows.path, 1, missing[0], f"a header column named {missing[0]!r}", got=rows.columns)
            )
        index = {role: rows.columns.index(c) for role, c in used.items()}
        names = dict(used)
    else:
        index = {}
        for role, c in used.items():
            if not c.isdigit():
                raise DataError(f"config.data.csv.{role}: expected a 0-based column position (header=False), got {c!r}")
            index[role] = int(c)
        names = {role: f"column {i}" for role, i in index.items()}
    sink = _TabularSink(policy, cols, names, cfg.tag_separator)
    u, i, t = index["user_col"], index["item_col"], index["time_col"]
    up, tg, ca = index.get("uploader_col"), index.get("tags_col"), index.get("category_col")
    width_checked = False
    for line, f in rows:
        if not width_checked:  # headerless: the first row fixes the width; every position must be inside it
            width_checked = True
            if max(index.values()) >= len(f):
                role = max(index, key=index.get)
                raise DataError(
                    describe_bad_row(rows.path, line, names[role], f"a column at position {index[role]}", got=f"{len(f)} columns")
                )
        sink.add(
            rows.path, line, f[u], f[i], f[t],
            f[up] if up is not None else None,
            f[tg] if tg is not None else None,
            f[ca] if ca is not None else None,
        )  # fmt: skip
    return sink.to_log([rows.path])


# ----------------------------------------------------------------------------------------- parquet
def _id_values(column, path: str, name: str) -> list:
    import pyarrow as pa

    typ = column.type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)):
        raise DataError(describe_bad_row(path, None, name, "a string or integer id column", got=str(column.type)))
    return column.to_pylist()


def _time_values(column, path: str, name: str) -> list:
    """Timestamps as Python values for `parse_timestamp`; timestamp/date columns become unix seconds."""
    import pyarrow as pa

    typ = column.type
    if pa.types.is_timestamp(typ):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[typ.unit]
        return [None if v is None else v // per_second for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_date32(typ):
        return [None if v is None else v * 86_400 for v in column.cast(pa.int32()).to_pylist()]
    ok = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    ok = ok or pa.types.is_string(typ) or pa.types.is_large_string(typ)
    if not ok:
        raise DataError(describe_bad_row(path, None, name, "an integer-convertible timestamp column", got=str(typ)))
    values = column.to_pylist()
    return values if not pa.types.is_decimal(typ) else [None if v is None else str(v) for v in values]


def read_parquet(data_cfg) -> EventLog:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = _mapping(data_cfg)
    policy = BadRowPolicy(data_cfg.on_bad_row)
    path = events_path(data_cfg)
    used = {role: c for role, c in cols.items() if c}
    try:
        schema = pq.read_schema(path)
        for c in used.values():
            if c not in schema.names:
                raise DataError(describe_bad_row(path, None, c, f"a column named {c!r}", got=schema.names))
        table = pq.read_table(path, columns=list(dict.fromkeys(used.values())))
    except (pa.ArrowException, OSError) as e:  # not parquet, truncated, unreadable
        raise DataError(describe_bad_row(path, None, None, "a parquet file", got=str(e))) from None
    if table.num_rows == 0:
        raise DataError(describe_bad_row(path, None, None, "at least one data row", got="none"))
    n = table.num_rows
    user = _id_values(table[used["user_col"]], path, used["user_col"])
    item = _id_values(table[used["item_col"]], path, used["item_col"])
    ts = _time_values(table[used["time_col"]], path, used["time_col"])
    side = {
        role: table[used[role]].to_pylist() if role in used else [None] * n
        for role in ("uploader_col", "tags_col", "category_col")
    }
    sink = _TabularSink(policy, cols, used, data_cfg.csv.tag_separator)
    for r, (u, i, t, up, tg, ca) in enumerate(
        zip(user, item, ts, side["uploader_col"], side["tags_col"], side["category_col"]), 1
    ):
        sink.add(path, r, u, i, t, up, tg, ca)
    return sink.to_log([path])
