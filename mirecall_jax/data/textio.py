"""Shared parsing helpers for the file readers: delimited lines, timestamps, event columns, item tables.

Every format reader goes through `DelimitedFile` for its text files, so missing files, empty files,
header mismatches, undecodable bytes and wrong column counts are detected and reported the same way
everywhere: `file:LINE: field 'name' expected ..., got ...` (via `BadRowPolicy.bad`). Readers only add
what is specific to their layout (which column is what, how genres are spelled).

Files are read as bytes and decoded one line at a time, so a decoding error can name its line (and,
found by re-splitting the raw bytes, its field). Line numbers are 1-based and count the header.
Blank lines are not rows: they are passed over without counting (a trailing empty line is common).
"""

from __future__ import annotations

import csv
import decimal
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from mirecall_jax.data.events import BadRowPolicy, DataError, EventLog, ItemTable, describe_bad_row

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BOM = b"\xef\xbb\xbf"
_SHOW = 80  # characters of an offending line quoted in a message


def require_dir(path: str, what: str = "config.data.path") -> str:
    """Absolute path of an existing directory (the data.path of a file format)."""
    if not path:
        raise DataError(f"{what}: expected a directory holding the source files, got an empty path")
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise DataError(f"{what}: expected an existing directory, got {full!r}")
    return full


def require_file(path: str) -> str:
    """Absolute path of an existing file; a missing file is never skippable."""
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise DataError(describe_bad_row(full, None, None, "an existing file", got="missing"))
    return full


def optional_file(path: str) -> str | None:
    full = os.path.abspath(path)
    return full if os.path.isfile(full) else None


class DelimitedFile:
    """Rows of a delimited text file as `(line_number, fields)`, with every malformed row sent to `policy`.

    Args:
      path: the file (must exist).
      sep: field separator; may be several characters ("::") unless `quoted`.
      policy: where bad rows go (raise, or count and skip).
      columns: expected column names. With `header`, the file's header must equal them (or start with
        them when `extra_columns`); without a header they name the fields and fix the column count.
        None: any header is accepted (generic csv), or without a header the first data row fixes the count.
      header: the first line holds column names (checked, then not yielded).
      encoding: "utf-8" can fail per line (reported as "undecodable"); "latin-1" cannot.
      quoted: parse with the csv module (quoted fields, doubled quotes) instead of a plain split.

    After construction `self.columns` holds the column names in file order (the header when there is one).
    A file without any data row is a `DataError` in both policies, raised when iteration ends.
    """

    def __init__(
        self,
        path: str,
        sep: str,
        policy: BadRowPolicy,
        *,
        columns: Sequence[str] | None = None,
        header: bool = False,
        encoding: str = "utf-8",
        quoted: bool = False,
        extra_columns: bool = False,
    ):
        self.path = require_file(path)
        self.sep, self.policy, self.encoding, self.quoted, self.header = sep, policy, encoding, quoted, header
        if os.path.getsize(self.path) == 0:
            raise DataError(describe_bad_row(self.path, None, None, "a non-empty file", got="0 bytes"))
        self.columns: list[str] | None = list(columns) if columns is not None else None
        self._had_bad_line = False  # an undecodable / wrong-width line means the file was not empty
        if header:
            self.columns = self._check_header(columns, extra_columns)

    # ----------------------------------------------------------------------------------------- header
    def _check_header(self, expected: Sequence[str] | None, extra_columns: bool) -> list[str]:
        with open(self.path, "rb") as f:
            raw = f.readline()
        raw = raw.removeprefix(_BOM).rstrip(b"\r\n")
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise DataError(describe_bad_row(self.path, 1, "header", f"{self.encoding} text", got=raw[:_SHOW])) from None
        got = [c.strip() for c in self._split(text)]
        if expected is not None:
            want = list(expected)
            ok = got[: len(want)] == want if extra_columns else got == want
            if not ok:
                sep = self.sep.replace("\t", "\\t")
                raise DataError(
                    describe_bad_row(self.path, 1, "header", f"columns {want} separated by '{sep}'", got=got)
                )
        return got

    def _split(self, text: str) -> list[str]:
        if self.quoted:
            return next(csv.reader([text], delimiter=self.sep), [])
        return text.split(self.sep)

    # ------------------------------------------------------------------------------------------- rows
    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        rows = self._quoted_rows() if self.quoted else self._plain_rows()
        n_data = 0  # lines that held a row, good or bad: zero means the file is empty
        for lineno, fields in rows:
            n_data += 1
            if self.columns is None:  # headerless, no names given: the first row fixes the width
                self.columns = [f"column {i}" for i in range(len(fields))]
            if len(fields) != len(self.columns):
                self._wrong_count(lineno, fields)
                continue
            yield lineno, fields
        if n_data == 0 and not self._had_bad_line:
            raise DataError(describe_bad_row(self.path, None, None, "at least one data row", got="none"))

    def _plain_rows(self) -> Iterator[tuple[int, list[str]]]:
        sep, enc = self.sep, self.encoding
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    raw = raw.removeprefix(_BOM)
                    if self.header:
                        continue
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                try:
                    text = raw.decode(enc)
                except UnicodeDecodeError:
                    self._undecodable(lineno, raw)
                    continue
                yield lineno, text.split(sep)

    def _quoted_rows(self) -> Iterator[tuple[int, list[str]]]:
        # The csv module pulls decoded lines from `lines()`; `state` tracks the line it last handed
        # over, which is the row's (last) line number. Undecodable lines are reported and dropped here.
        state = [0]

        def lines() -> Iterator[str]:
            with open(self.path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    state[0] = lineno
                    if lineno == 1:
                        raw = raw.removeprefix(_BOM)
                        if self.header:
                            continue
                    try:
                        yield raw.decode(self.encoding)
                    except UnicodeDecodeError:
                        self._undecodable(lineno, raw.rstrip(b"\r\n"))

        try:
            for fields in csv.reader(lines(), delimiter=self.sep):
                if len(fields) > 1 or (fields and fields[0].strip()):  # blank lines are not rows
                    yield state[0], fields
        except csv.Error as e:  # e.g. a quoted field left open at the end of the file
            raise DataError(describe_bad_row(self.path, state[0], None, "well-formed csv quoting", got=str(e))) from None

    # ------------------------------------------------------------------------------------- bad lines
    def _undecodable(self, lineno: int, raw: bytes) -> None:
        # Name the field holding the bad bytes: split the raw line (separators are ASCII, and UTF-8
        # never hides an ASCII byte inside a multi-byte character) and decode field by field.
        field = None
        for i, part in enumerate(raw.split(self.sep.encode())):
            try:
                part.decode(self.encoding)
            except UnicodeDecodeError:
                field = self.columns[i] if self.columns and i < len(self.columns) else f"column {i}"
                break
        self._had_bad_line = True
        self.policy.bad("undecodable", self.path, lineno, field, f"{self.encoding} text", got=raw[:_SHOW])

    def _wrong_count(self, lineno: int, fields: list[str]) -> None:
        names = self.columns or []
        sep = self.sep.replace("\t", "\\t")
        # Too few fields: name the first missing one, which is usually what the reader wants to know.
        field = names[len(fields)] if len(fields) < len(names) else None
        expected = f"{len(names)} columns separated by '{sep}' ({', '.join(names)})"
        got = f"{len(fields)} columns: " + self.sep.join(fields)[:_SHOW]
        self._had_bad_line = True
        self.policy.bad("wrong_column_count", self.path, lineno, field, expected, got=got)


def parse_timestamp(value) -> int | None:
    """An integer timestamp from text or a number, or None when it is not an integral int64.

    Integral decimals ("978300760.0", "1.3e9") are accepted because some exports write timestamps
    as floats; Decimal (not float) keeps large values exact.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        v = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        v = int(value)
    else:
        try:
            v = int(value)
        except (ValueError, TypeError):
            try:
                d = decimal.Decimal(str(value).strip())
            except decimal.InvalidOperation:
                return None
            if not d.is_finite() or d != d.to_integral_value():
                return None
            v = int(d)
    return v if _INT64_MIN <= v <= _INT64_MAX else None


class EventColumns:
    """Collects validated (user, item, timestamp) rows in plain lists; converted to numpy once at the end."""

    def __init__(self, policy: BadRowPolicy, user_field: str, item_field: str, time_field: str):
        self.policy = policy
        self.fields = (user_field, item_field, time_field)
        self.user: list[str] = []
        self.item: list[str] = []
        self.timestamp: list[int] = []

    def add(self, path: str, line: int, user, item, ts) -> bool:
        """Validates one row; appends it and returns True, or reports it to the policy and returns False."""
        user = "" if user is None else str(user).strip()
        item = "" if item is None else str(item).strip()
        if not user:
            self.policy.bad("empty_id", path, line, self.fields[0], "a non-empty user id", got=user)
            return False
        if not item:
            self.policy.bad("empty_id", path, line, self.fields[1], "a non-empty item id", got=item)
            return False
        t = parse_timestamp(ts)
        if t is None:
            self.policy.bad("bad_timestamp", path, line, self.fields[2], "an integer timestamp", got=ts)
            return False
        self.user.append(user)
        self.item.append(item)
        self.timestamp.append(t)
        return True

    def __len__(self) -> int:
        return len(self.user)

    def to_log(
        self,
        sources: list[str],
        items: ItemTable | None = None,
        split: np.ndarray | None = None,
    ) -> EventLog:
        if not self.user:  # every row was skipped: nothing downstream can work with that
            raise DataError(
                f"{', '.join(sources)}: expected at least one valid event row, got none "
                f"(skipped rows by reason: {dict(self.policy.counts)})"
            )
        return EventLog(
            user=np.array(self.user, dtype=str),
            item=np.array(self.item, dtype=str),
            timestamp=np.array(self.timestamp, dtype=np.int64),
            items=items,
            split=split,
            sources=list(sources),
            bad_rows=dict(self.policy.counts),
        )


class ItemRows:
    """Collects one metadata row per item (first occurrence wins) and builds the `ItemTable`.

    Which side columns exist is fixed at construction: a column that is None here stays None in the
    table (the source does not have it), which downstream reads as "no such side feature".
    """

    def __init__(self, policy: BadRowPolicy, *, uploader: bool = False, tags: bool = False, category: bool = False):
        self.policy = policy
        self.index: dict[str, int] = {}
        self.item: list[str] = []
        self.uploader: list[str] | None = [] if uploader else None
        self.tags: list[list[str]] | None = [] if tags else None
        self.category: list[str] | None = [] if category else None

    def add(
        self,
        item: str,
        *,
        uploader: str = "",
        tags: Sequence[str] = (),
        category: str = "",
        path: str | None = None,
        line: int | None = None,
        field: str = "item_id",
        duplicate_is_bad: bool = True,
    ) -> int | None:
        """Adds `item`; returns its row, or None when the row was rejected or the item already known.

        A metadata file that lists an item twice is malformed (`duplicate_is_bad`, reason
        "duplicate_item"); an event file that carries item columns (generic csv) repeats items on
        every event, so there the first occurrence silently wins.
        """
        item = item.strip()
        if not item:
            self.policy.bad("empty_id", path, line, field, "a non-empty item id", got=item)
            return None
        if item in self.index:
            if duplicate_is_bad:
                self.policy.bad("duplicate_item", path, line, field, "each item listed once", got=item)
            return None
        self.index[item] = len(self.item)
        self.item.append(item)
        if self.uploader is not None:
            self.uploader.append(uploader.strip())
        if self.tags is not None:
            self.tags.append(list(tags))
        if self.category is not None:
            self.category.append(category.strip())
        return self.index[item]

    def table(self) -> ItemTable:
        t = ItemTable(item=np.array(self.item, dtype=str))
        if self.uploader is not None:
            t.uploader = np.array(self.uploader, dtype=str)
        if self.category is not None:
            t.category = np.array(self.category, dtype=str)
        if self.tags is not None:
            t.tag_offsets, t.tags = tags_csr(self.tags)
        return t


def tags_csr(tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-item tag lists -> (offsets [M+1] int64, flat tags [nnz] str)."""
    offsets = np.zeros(len(tag_lists) + 1, np.int64)
    np.cumsum([len(t) for t in tag_lists], out=offsets[1:])
    flat = [tag for tags in tag_lists for tag in tags]
    return offsets, np.array(flat, dtype=str)


def clean_tags(tags, none: Sequence[str] = ()) -> list[str]:
    """Stripped tags, order kept, without empties, repeats or placeholder values (`none`)."""
    out: list[str] = []
    for t in tags:
        t = "" if t is None else str(t).strip()
        if t and t not in none and t not in out:
            out.append(t)
    return out


def split_tags(text: str, sep: str = "|", none: Sequence[str] = ()) -> list[str]:
    """'A|B||C' -> ['A', 'B', 'C'] (see `clean_tags`)."""
    return clean_tags(text.split(sep), none)
