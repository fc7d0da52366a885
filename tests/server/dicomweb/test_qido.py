"""QIDO-RS query parsing and matching rules with known answers (PS3.4 C.2.2.2)."""

from __future__ import annotations

import pytest

from server.dicomweb import qido


@pytest.mark.parametrize(
    ("raw", "bounds"),
    [
        ("20200101", ("20200101", "20200101")),
        ("20200101-20201231", ("20200101", "20201231")),
        ("-20201231", (None, "20201231")),
        ("20200101-", ("20200101", None)),
        (" 20200229 ", ("20200229", "20200229")),
    ],
)
def test_date_ranges(raw: str, bounds: tuple[str | None, str | None]) -> None:
    assert qido.date_range(raw) == bounds


@pytest.mark.parametrize("raw", ["2020", "2020-01-01", "-", "20201231-20200101", "20200101--20201231", "abcdefgh"])
def test_bad_dates_are_refused(raw: str) -> None:
    with pytest.raises(qido.QueryError):
        qido.date_range(raw)


@pytest.mark.parametrize(
    ("stored", "raw", "matches"),
    [
        ("20200615", "20200101-20201231", True),
        ("20200101", "20200101-20201231", True),  # inclusive at both ends
        ("20201231", "20200101-20201231", True),
        ("20210101", "20200101-20201231", False),
        ("19991231", "20200101-", False),
        ("20300101", "20200101-", True),
        ("19991231", "-20200101", True),
        ("20200102", "20200101", False),
        ("20200101", "20200101", True),
        (None, "-20991231", False),  # an empty date matches no range
        ("", "20200101", False),
    ],
)
def test_date_matching(stored: str | None, raw: str, matches: bool) -> None:
    assert qido.date_matches(stored, qido.date_range(raw)) is matches


def test_the_ohif_query() -> None:
    query = qido.parse(
        [("limit", "25"), ("offset", "0"), ("fuzzymatching", "true"), ("includefield", "00081030,00080060")], "study"
    )
    assert (query.limit, query.offset, query.fuzzy, query.include, query.matches) == (
        25,
        0,
        True,
        [0x00081030, 0x00080060],
        {},
    )
    assert query.warnings == []


def test_keys_by_keyword_or_tag_repeated_universal_and_ignored() -> None:
    query = qido.parse(
        [
            ("0020000D", "1.2"),
            ("StudyInstanceUID", "1.3"),
            ("PatientID", "*"),
            ("PatientName", "Sm*"),
            ("includefield", "all"),
        ],
        "study",
    )
    assert query.matches == {"StudyInstanceUID": "1.2,1.3"} and query.include_all
    assert query.ignored == ["PatientName"] and "PatientName" in query.warnings[0]
    assert qido.uid_list("1.2,1.3\\1.4, ") == ["1.2", "1.3", "1.4"]
    assert qido.parse([("limit", "5000")], "study").limit == qido.MAX_LIMIT
    for bad in ([("limit", "-1")], [("NotAKeyword", "x")], [("includefield", "Nope")]):
        with pytest.raises(qido.QueryError):
            qido.parse(bad, "study")


def test_wildcards_become_escaped_like_patterns() -> None:
    assert qido.like_pattern("ab*c?d") == "ab%c_d"
    assert qido.like_pattern("100%_x\\") == "100\\%\\_x\\\\"
    assert qido.modality_list("ct,MR\\dx") == ["CT", "MR", "DX"]
