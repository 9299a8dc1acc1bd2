"""Which PostgreSQL databases order text by code point
(``postgresql._collates_in_code_point_order``): there the UNIQUE index on call_id answers
``voipgw calls --call-id``; any other gets the index on ``call_id COLLATE "C"``
(``CALL_ID_INDEX``). Only what PostgreSQL itself guarantees is taken (session 42): its
"C"/"POSIX", and the builtin provider's C, C.UTF-8 (PostgreSQL 17) and PG_UNICODE_FAST (18),
which sort by code point; never a libc C.UTF-8 (the C library's order, which PostgreSQL does
not specify) nor ICU. The test cluster is PostgreSQL 15 (no builtin provider): the catalog rows
are given here as each version shows them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.store.postgresql import _collates_in_code_point_order


class _Database:
    """What ``SELECT to_jsonb(d) FROM pg_database d`` answers, as psycopg gives jsonb."""

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row

    def execute(self, sql: str, *args: object) -> _Database:
        assert "pg_database" in sql
        return self

    def fetchone(self) -> tuple[dict[str, Any]]:
        return (self._row,)


@pytest.mark.parametrize(
    ("row", "code_point_order"),
    [
        ({"datcollate": "C"}, True),  # before PostgreSQL 15: no datlocprovider
        ({"datcollate": "POSIX"}, True),
        ({"datcollate": "en_US.UTF-8"}, False),
        ({"datlocprovider": "c", "datcollate": "C"}, True),
        ({"datlocprovider": "c", "datcollate": "C.UTF-8"}, False),  # libc's: the library's
        ({"datlocprovider": "c", "datcollate": "C.utf8"}, False),
        ({"datlocprovider": "i", "datcollate": "C", "daticulocale": "und"}, False),
        ({"datlocprovider": "b", "datcollate": "C", "datlocale": "C"}, True),
        ({"datlocprovider": "b", "datcollate": "C", "datlocale": "C.UTF-8"}, True),  # 17
        ({"datlocprovider": "b", "datcollate": "C", "datlocale": "PG_UNICODE_FAST"}, True),  # 18
    ],
)
def test_only_what_postgresql_guarantees_is_taken_for_code_point_order(
    row: dict[str, Any], code_point_order: bool
) -> None:
    assert _collates_in_code_point_order(_Database(row)) is code_point_order  # type: ignore[arg-type]
