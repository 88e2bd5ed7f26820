"""Reader options of a dataset (CSV delimiter, header, encoding; columns for every format),
validated once, and the column selection every reader applies."""
from __future__ import annotations

import codecs
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from .errors import InvalidRequest
from .sources import shorten

READER_OPTIONS = ("delimiter", "header", "encoding", "columns")

@dataclass(frozen=True)
class ReaderOptions:
    """Validated reader options; ``delimiter`` defaults to tab for ``.tsv`` names."""

    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    columns: tuple[str, ...] | None = None


def reader_options(fmt: str, options: dict[str, Any] | None, name: str = "") -> ReaderOptions:
    """Validated options for ``fmt`` (``name``, a file, picks the TSV default)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(READER_OPTIONS))
    if unknown:
        raise InvalidRequest(f"unknown reader option(s): {shorten(', '.join(unknown))}; allowed: "
                             f"{', '.join(READER_OPTIONS)}", {"unknown": [shorten(u) for u in unknown[:20]]})
    if fmt != "csv":
        given = [k for k in ("delimiter", "header", "encoding") if options.get(k) is not None]
        if given:
            raise InvalidRequest(f"option(s) {', '.join(given)} apply to csv only, not {fmt}")
    tsv = name.lower().removesuffix(".gz").endswith((".tsv", ".tab"))
    opts = ReaderOptions(delimiter="\t" if tsv else ",")
    if options.get("delimiter") is not None:
        opts = replace(opts, delimiter=_check_delimiter(options["delimiter"]))
    if options.get("header") is not None:
        if not isinstance(options["header"], bool):
            raise InvalidRequest("option 'header' must be true or false")
        opts = replace(opts, header=options["header"])
    if options.get("encoding") is not None:
        opts = replace(opts, encoding=_check_encoding(options["encoding"]))
    if options.get("columns") is not None:
        opts = replace(opts, columns=check_columns(options["columns"]))
    return opts


def _check_delimiter(value: Any) -> str:
    value = "\t" if value in ("tab", "\\t") else value
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n\"":
        raise InvalidRequest("option 'delimiter' must be a single character (e.g. ',', ';', '|', "
                             "'\\t' or 'tab'), not a quote or line break")
    return value


def _check_encoding(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest("option 'encoding' must be the name of a text encoding (e.g. utf-8, latin-1)")
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise InvalidRequest(f"unknown encoding {value!r} (e.g. utf-8, latin-1)") from None
    # rot13, base64, zlib… are codecs too, but not bytes-to-text: pandas raised LookupError (a 500)
    if not getattr(info, "_is_text_encoding", True):
        raise InvalidRequest(f"{value!r} is not a text encoding (e.g. utf-8, latin-1)")
    return info.name


MAX_COLUMNS = 10_000


def check_columns(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, (list, tuple)) or not value or len(value) > MAX_COLUMNS
            or not all(isinstance(c, str) and c and len(c) <= 1024 for c in value)
            or len(set(value)) != len(value)):
        raise InvalidRequest(f"option 'columns' must be a non-empty list of at most {MAX_COLUMNS} distinct "
                             "column names (each at most 1024 characters)")
    return tuple(value)


def select_columns(frame: pd.DataFrame, columns: tuple[str, ...] | None) -> pd.DataFrame:
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidRequest(f"unknown column(s): {shorten(', '.join(missing))}; available: "
                             f"{shorten(', '.join(map(str, frame.columns)), 1000)}", {"unknown": missing[:100]})
    return frame[list(columns)]
