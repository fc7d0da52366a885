"""QIDO-RS queries (PS3.18 8.3.4, PS3.4 C.2.2.2): the query parameters parsed into matching keys, with the
matching rules of the keys the index holds (UID lists, wildcards, date ranges) as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .dicom_json import keyword_of, tag_of

#: Matching keys the index answers from its columns, by level; any other key is ignored (the answer's Warning
#: header names it), as PS3.18 8.3.4.1 allows.
_SERIES_KEYS = ("StudyInstanceUID", "PatientID", "StudyDate", "SeriesInstanceUID", "Modality")
MATCHED = {
    "study": ("StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy"),
    "series": _SERIES_KEYS,
    "instance": (*_SERIES_KEYS, "SOPInstanceUID", "SOPClassUID"),
}
#: Most results of one query; a larger `limit` is cut to it (and said so in a Warning header).
MAX_LIMIT = 1000
_RESERVED = ("limit", "offset", "includefield", "fuzzymatching")
_DATE = re.compile(r"^\d{8}$")


class QueryError(ValueError):
    """A query the service cannot parse (answered 400)."""


@dataclass
class Query:
    """One QIDO-RS query: matching values by keyword, the extra attributes asked for, the page."""

    matches: dict[str, str] = field(default_factory=dict)
    include: list[int] = field(default_factory=list)
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    fuzzy: bool = False
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse(params: list[tuple[str, str]], level: str) -> Query:
    """The query of a request's parameters at `level` ("study", "series" or "instance")."""
    query = Query()
    for name, raw in params:
        if name in _RESERVED:
            _reserved(query, name, raw)
            continue
        try:
            keyword = keyword_of(tag_of(name))
        except ValueError as exc:
            raise QueryError(f"unknown query parameter: {exc}") from exc
        if keyword not in MATCHED[level]:
            query.ignored.append(keyword)
        elif raw not in ("", "*"):  # universal matching: no condition
            query.matches[keyword] = raw if keyword not in query.matches else f"{query.matches[keyword]},{raw}"
    if query.ignored:
        query.warnings.append(f"these attributes are not supported for matching and were ignored: {_names(query)}")
    return query


def _names(query: Query) -> str:
    return ", ".join(dict.fromkeys(query.ignored))


def _reserved(query: Query, name: str, raw: str) -> None:
    if name == "includefield":
        for item in filter(None, (part.strip() for part in raw.split(","))):
            if item == "all":
                query.include_all = True
                continue
            try:
                query.include.append(tag_of(item))
            except ValueError as exc:
                raise QueryError(f"includefield: {exc}") from exc
    elif name == "fuzzymatching":
        # Accepted: the only person names stored are empty (de-identification), so literal matching is the same.
        query.fuzzy = raw.strip().lower() == "true"
    else:
        number = _count(name, raw)
        if name == "offset":
            query.offset = number
        elif number > MAX_LIMIT:
            query.limit = MAX_LIMIT
            query.warnings.append(f"limit {number} is more than this server answers at once; answered {MAX_LIMIT}")
        else:
            query.limit = number


def _count(name: str, raw: str) -> int:
    if not raw.strip().isdigit() or len(raw.strip()) > 10:
        raise QueryError(f"{name} must be a non-negative integer, got {raw!r}")
    return min(int(raw), 2**31 - 1)


def uid_list(raw: str) -> list[str]:
    """UID list matching (PS3.4 C.2.2.2.2): values separated by commas (or backslashes, as DICOM writes them)."""
    return [uid.strip() for uid in re.split(r"[,\\]", raw) if uid.strip()]


def date_range(raw: str) -> tuple[str | None, str | None]:
    """(the first day, the last day), inclusive, of a DA matching value: "20200101" (that day), "20200101-20201231",
    "-20201231" (up to), "20200101-" (from); None where a side is open. QueryError for any other form."""
    text = raw.strip()
    low, dash, high = text.partition("-")
    if not dash:
        low = high = text
    for day in (low, high):
        if day and not _DATE.match(day):
            raise QueryError(f"StudyDate {raw!r} is not a date (YYYYMMDD) or a range of dates (YYYYMMDD-YYYYMMDD)")
    if not low and not high:
        raise QueryError("StudyDate '-' names no date")
    if low and high and low > high:
        raise QueryError(f"StudyDate {raw!r}: the range ends before it begins")
    return low or None, high or None


def date_matches(stored: str | None, bounds: tuple[str | None, str | None]) -> bool:
    """Whether a stored DA value lies in the range; an empty one never does (only universal matching would)."""
    if not stored:
        return False
    low, high = bounds
    return (low is None or stored >= low) and (high is None or stored <= high)


def like_pattern(raw: str) -> str:
    """A DICOM wildcard value ("*" any run, "?" one character) as an SQL LIKE pattern with "\\" as escape."""
    escaped = raw.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def modality_list(raw: str) -> list[str]:
    return [m.strip().upper() for m in re.split(r"[,\\]", raw) if m.strip()]
