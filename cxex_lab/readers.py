"""Reading export files into the engine, with the row numbers a researcher sees.

Every reader puts one file onto an Ibis DuckDB connection as a table of the
columns asked for (text for CSV and Excel, typed for Parquet, SPSS and Stata)
plus ``_row``, the row as the researcher sees it:

========== =================================================================
format     ``_row``
========== =================================================================
CSV        the line of the file where the record starts (header lines
           counted; records with line breaks inside quoted fields take
           several lines, and the count follows them)
Excel      the spreadsheet row number
SPSS/Stata the case number (Data View's row, from 1)
Parquet    the record's position + 2 (as if exported to CSV with one header
           line; the contract's convention)
========== =================================================================

CSV files are parsed by Arrow's streaming reader (all columns as text, in
blocks: a log of tens of millions of rows never sits in memory) and copied into
a temporary DuckDB table; personal columns that are dropped are never copied.
If the file has records with the wrong number of fields, or blank lines, it is
read again with Python's ``csv`` module, which knows each record's line, so the
row numbers stay exact and the ragged records can be named. Excel is read cell
by cell with openpyxl (date cells are written in the column's declared format,
so they parse like typed dates), SPSS and Stata with pyreadstat (value labels
and question texts come from the file). Parquet is read where it lies.

The raw files are never modified.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Header", "RawPart", "read_header", "read_part", "READERS"]

from cxex_lab.config import READERS

_BLOCK = 1 << 24  # 16 MiB blocks for Arrow's CSV reader
_CHUNK = 100_000  # records per batch on the exact (Python csv) path


@dataclass
class Header:
    """What a file's header says: its columns, their question texts, and (SPSS/Stata) value labels."""

    columns: list[str]
    questions: dict[str, str] = field(default_factory=dict)
    value_labels: dict[str, dict[Any, str]] = field(default_factory=dict)
    header_lines: int = 1  # physical lines before the first record (CSV)
    kind: str = "csv"


@dataclass
class RawPart:
    """One file on the engine: an Ibis table with the asked columns and ``_row``."""

    table: Any
    header: Header
    rows: int
    ragged: list[tuple[int, int, int]] = field(default_factory=list)  # (line, fields found, fields expected)
    temp: list[str] = field(default_factory=list)  # temporary tables/views to drop afterwards


def _reader(path: Path) -> str:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot read {path.suffix or 'suffix-less'} files; use CSV, Parquet, Excel (.xlsx), SPSS "
                         f"(.sav) or Stata (.dta)")
    return kind


def _dedupe(names: Sequence[str]) -> list[str]:
    """Column names made unique (a repeated name gets ``_2``, ``_3``; blank ones ``column_<n>``)."""
    out, seen = [], {}
    for i, n in enumerate(names):
        n = (n or "").strip() or f"column_{i + 1}"
        if n in ("_row", "_file"):
            n = n + "_"
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return out


def _encoding(enc: str) -> str:
    return "utf-8-sig" if enc.lower().replace("_", "-") in ("utf-8", "utf8") else enc


def _sniff_delimiter(path: Path, encoding: str) -> str:
    with open(path, encoding=_encoding(encoding), newline="") as fh:
        sample = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


_KIND_WORDS = {"csv": "CSV", "excel": "Excel", "spss": "SPSS", "stata": "Stata", "parquet": "Parquet"}


def read_header(path: Path, header_rows: int = 1, names_row: int = 1, question_row: int | None = None,
                delimiter: str | None = None, encoding: str = "utf-8", sheet: Any = None) -> Header:
    """The header of one export file (column names, question texts, value labels).

    Raises ``ValueError`` saying why the file cannot be read (without its name:
    the caller names it).
    """
    kind = _reader(path)
    try:
        return _read_header(path, kind, header_rows, names_row, question_row, delimiter, encoding, sheet)
    except ValueError as err:
        if str(err).startswith("could not") or "header" in str(err) or "sheet" in str(err) or "empty" in str(err):
            raise
        raise ValueError(f"could not be read as {_KIND_WORDS[kind]} ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"could not be read as {_KIND_WORDS[kind]} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    except Exception as err:  # noqa: BLE001 - pyarrow / pyreadstat / openpyxl errors of a damaged file
        raise ValueError(f"could not be read as {_KIND_WORDS[kind]} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def _read_header(path: Path, kind: str, header_rows: int, names_row: int, question_row: int | None,
                 delimiter: str | None, encoding: str, sheet: Any) -> Header:
    if kind == "csv":
        delim = delimiter or _sniff_delimiter(path, encoding)
        with open(path, encoding=_encoding(encoding), newline="") as fh:
            reader = csv.reader(fh, delimiter=delim)
            lines = []
            for rec in reader:
                lines.append(rec)
                if len(lines) >= header_rows:
                    break
            used = reader.line_num
        if not lines:
            raise ValueError("the file is empty")
        if len(lines) < header_rows:
            raise ValueError(f"the file has {len(lines)} line(s), fewer than its {header_rows} header line(s)")
        names = _dedupe(lines[names_row - 1])
        questions = {}
        if question_row:
            qs = lines[question_row - 1]
            questions = {n: q.strip() for n, q in zip(names, qs) if q and q.strip() and q.strip() != n}
        return Header(names, questions, header_lines=used, kind="csv")
    if kind == "excel":
        ws, wb = _sheet(path, sheet)
        try:
            rows = list(itertools.islice(ws.iter_rows(values_only=True), header_rows))
        finally:
            wb.close()
        if len(rows) < header_rows:
            raise ValueError(f"the sheet has fewer rows than its {header_rows} header row(s)")
        names = _dedupe([_cell_text(v) or "" for v in rows[names_row - 1]])
        questions = {}
        if question_row:
            questions = {n: _cell_text(q).strip() for n, q in zip(names, rows[question_row - 1])
                         if _cell_text(q) and _cell_text(q).strip() != n}
        return Header(names, questions, header_lines=header_rows, kind="excel")
    if kind in ("spss", "stata"):
        meta = _readstat(path, kind, metadataonly=True)[1]
        names = list(meta.column_names)
        questions = {n: q for n, q in (meta.column_names_to_labels or {}).items() if q}
        return Header(names, questions, dict(meta.variable_value_labels or {}), header_lines=0, kind=kind)
    import pyarrow.parquet as pq

    names = list(pq.read_schema(path).names)
    return Header(names, header_lines=0, kind="parquet")


def _sheet(path: Path, sheet: Any):
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    if sheet is None:
        return wb.worksheets[0], wb
    if isinstance(sheet, int):
        if not 0 <= sheet < len(wb.worksheets):
            names = wb.sheetnames
            wb.close()
            raise ValueError(f"there is no sheet {sheet} (sheets, from 0: {names})")
        return wb.worksheets[sheet], wb
    if sheet not in wb.sheetnames:
        names = wb.sheetnames
        wb.close()
        raise ValueError(f"there is no sheet {sheet!r}; the sheets are {names}")
    return wb[sheet], wb


def _readstat(path: Path, kind: str, **kw):
    import pyreadstat

    fn = pyreadstat.read_sav if kind == "spss" else pyreadstat.read_dta
    if path.suffix.lower() == ".por":
        fn = pyreadstat.read_por
    return fn(str(path), **kw)


def _cell_text(v: Any, fmt: str | None = None) -> str | None:
    """An Excel cell as text: whole numbers without '.0', dates in ``fmt`` (default ISO), times as H:M:S."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, datetime):
        if fmt:
            return v.strftime(fmt)
        return v.isoformat(sep=" ", timespec="microseconds" if v.microsecond else "seconds")
    if isinstance(v, date):
        return v.strftime(fmt) if fmt else v.isoformat()
    if isinstance(v, time):
        return v.strftime(fmt) if fmt and "%" in fmt and "%d" not in fmt else v.isoformat()
    if isinstance(v, timedelta):
        return repr(v.total_seconds())
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return str(int(v))
        return repr(v)
    return str(v)


# --------------------------------------------------------------------------- onto the engine


def _name(path: Path, tag: str) -> str:
    return f"cxex_load_{tag}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def _store(con: Any, name: str, data: pa.Table | pa.RecordBatchReader) -> Any:
    """Copy Arrow data into a temporary DuckDB table (streamed: a reader is consumed batch by batch)."""
    raw = con.con
    src = f"{name}_src"
    raw.register(src, data)
    try:
        raw.execute(f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT * FROM "{src}"')
    finally:
        raw.unregister(src)
    return con.table(name)


def read_part(con: Any, path: Path, header: Header, columns: Sequence[str], *, header_rows: int = 1,
              delimiter: str | None = None, encoding: str = "utf-8", sheet: Any = None,
              date_formats: dict[str, str] | None = None, tag: str = "t") -> RawPart:
    """Put the ``columns`` of one file onto ``con`` (a DuckDB Ibis backend) with ``_row``.

    ``date_formats`` (column -> strptime format) says how Excel date cells of
    a column are written as text. Returns the table, the header, the number of
    records and (CSV) the records with the wrong number of fields.
    """
    kind = header.kind
    cols = [c for c in header.columns if c in set(columns)]
    name = _name(path, tag)
    if kind == "csv":
        return _read_csv(con, path, header, cols, delimiter or _sniff_delimiter(path, encoding), encoding, name)
    if kind == "excel":
        return _read_excel(con, path, header, cols, header_rows, sheet, date_formats or {}, name)
    if kind in ("spss", "stata"):
        df, _meta = _readstat(path, kind, usecols=cols or None, apply_value_formats=False, user_missing=False)
        df = df[cols]
        arrays, names = [], []
        for c in cols:
            s = df[c]
            if s.dtype == object:
                s = s.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                arrays.append(pa.array(s.tolist(), type=pa.string()))
            else:
                arr = pa.Array.from_pandas(s)
                if pa.types.is_timestamp(arr.type) and arr.type.unit == "ns":
                    arr = arr.cast(pa.timestamp("us", arr.type.tz), safe=False)
                arrays.append(arr)
            names.append(c)
        arrays.append(pa.array(np.arange(1, len(df) + 1, dtype="int64")))
        names.append("_row")
        t = _store(con, name, pa.Table.from_arrays(arrays, names=names))
        return RawPart(t, header, len(df), temp=[name])
    # parquet: read where it lies (a temporary view), records numbered as the contract does
    sel = ", ".join(f'"{c}"' for c in cols)
    sel = (sel + ", ") if sel else ""
    lit = "'" + str(path).replace("'", "''") + "'"
    con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT {sel}file_row_number + 2 AS _row '
                f"FROM read_parquet({lit}, file_row_number = true)")
    t = con.table(name)
    return RawPart(t, header, int(con.execute(t.count())), temp=[name])


def _read_csv(con, path: Path, header: Header, cols: list[str], delim: str, encoding: str, name: str) -> RawPart:
    import pyarrow.csv as pcsv

    invalid: list[Any] = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "skip"

    first_line = header.header_lines + 1
    opts = dict(
        read_options=pcsv.ReadOptions(skip_rows=header.header_lines, column_names=header.columns, block_size=_BLOCK,
                                      encoding=encoding),
        parse_options=pcsv.ParseOptions(delimiter=delim, newlines_in_values=True, ignore_empty_lines=False,
                                        invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header.columns},
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    n = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        rec, extra = 0, 0  # records so far, line breaks inside fields so far
        reader = pcsv.open_csv(path, **opts)
        for b in reader:
            if b.num_rows == 0:
                continue
            nl = None
            for c in b.columns:  # line breaks inside (quoted) fields, over every column
                k = pc.count_substring(c, "\n")
                nl = k if nl is None else pc.add(nl, k)
            nl = nl.cast(pa.int64()) if nl is not None else pa.array(np.zeros(b.num_rows, dtype="int64"))
            before = pc.subtract(pc.cumulative_sum(nl), nl)
            rows = pc.add(pc.add(before, extra), pa.array(np.arange(rec, rec + b.num_rows, dtype="int64") + first_line))
            extra += int(pc.sum(nl).as_py() or 0)
            rec += b.num_rows
            yield pa.RecordBatch.from_arrays([b.column(header.columns.index(c)) for c in cols] + [rows],
                                             names=[*cols, "_row"])
        n[0] = rec

    schema = pa.schema([*[(c, pa.string()) for c in cols], ("_row", pa.int64())])
    try:
        t = _store(con, name, pa.RecordBatchReader.from_batches(schema, batches()))
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise ValueError(f"could not be read as CSV (delimiter {delim!r}, encoding {encoding}): "
                         f"{str(err).splitlines()[0]}") from None
    if not invalid:
        return RawPart(t, header, n[0], temp=[name])
    # blank lines or ragged records: read again with a parser that knows each record's line
    return _read_csv_exact(con, path, header, cols, delim, encoding, name)


def _read_csv_exact(con, path: Path, header: Header, cols: list[str], delim: str, encoding: str,
                    name: str) -> RawPart:
    idx = [header.columns.index(c) for c in cols]
    width = len(header.columns)
    ragged: list[tuple[int, int, int]] = []
    count = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        with open(path, encoding=_encoding(encoding), newline="") as fh:
            reader = csv.reader(fh, delimiter=delim)
            prev = 0
            skipped = 0
            buf: list[list[str]] = [[] for _ in cols]
            rows: list[int] = []
            for rec in reader:
                start = prev + 1
                prev = reader.line_num
                if start <= header.header_lines:
                    continue
                if not rec or (len(rec) == 1 and rec[0] == "" and width > 1):
                    continue  # a blank line is no record
                if len(rec) != width:
                    ragged.append((start, len(rec), width))
                    skipped += 1
                    continue
                for j, i in enumerate(idx):
                    buf[j].append(rec[i])
                rows.append(start)
                if len(rows) >= _CHUNK:
                    yield _batch(buf, rows, cols)
                    count[0] += len(rows)
                    buf, rows = [[] for _ in cols], []
            if rows:
                count[0] += len(rows)
                yield _batch(buf, rows, cols)

    schema = pa.schema([*[(c, pa.string()) for c in cols], ("_row", pa.int64())])
    t = _store(con, name, pa.RecordBatchReader.from_batches(schema, batches()))
    return RawPart(t, header, count[0], ragged=ragged, temp=[name])


def _batch(buf: list[list[str]], rows: list[int], cols: list[str]) -> pa.RecordBatch:
    arrays = [pa.array(b, type=pa.string()) for b in buf] + [pa.array(rows, type=pa.int64())]
    return pa.RecordBatch.from_arrays(arrays, names=[*cols, "_row"])


def _read_excel(con, path: Path, header: Header, cols: list[str], header_rows: int, sheet: Any,
                date_formats: dict[str, str], name: str) -> RawPart:
    ws, wb = _sheet(path, sheet)
    idx = [header.columns.index(c) for c in cols]
    buf: list[list[str | None]] = [[] for _ in cols]
    rows: list[int] = []
    try:
        for r, values in enumerate(ws.iter_rows(values_only=True), start=1):
            if r <= header_rows:
                continue
            if values is None or all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue  # an empty spreadsheet row is no record
            for j, i in enumerate(idx):
                v = values[i] if i < len(values) else None
                buf[j].append(_cell_text(v, date_formats.get(cols[j])))
            rows.append(r)
    finally:
        wb.close()
    arrays = [pa.array(b, type=pa.string()) for b in buf] + [pa.array(rows, type=pa.int64())]
    t = _store(con, name, pa.Table.from_arrays(arrays, names=[*cols, "_row"]))
    return RawPart(t, header, len(rows), temp=[name])


def drop_temp(con: Any, names: Sequence[str]) -> None:
    """Drop the temporary tables and views a load created."""
    for n in names:
        for what in ("VIEW", "TABLE"):
            try:
                con.raw_sql(f'DROP {what} IF EXISTS "{n}"')
            except Exception:  # noqa: BLE001 - the other kind of object
                pass
