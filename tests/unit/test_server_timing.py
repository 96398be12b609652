"""``Server-Timing`` values: built by each layer, read back by the benchmark and tests."""

from __future__ import annotations

from dinfer import server_timing


def test_entries_join_and_parse_back() -> None:
    value = server_timing.join("engine;dur=114.20, mlnode;dur=117.5", "", server_timing.entry("ta", 10.0, 10.0125))
    assert value == "engine;dur=114.20, mlnode;dur=117.5, ta;dur=12.50"
    assert server_timing.parse(value) == {"engine": 114.2, "mlnode": 117.5, "ta": 12.5}


def test_parse_skips_what_it_cannot_read() -> None:
    # entries without a duration, a description before the duration, junk and an empty value
    value = 'cache, db;desc="primary";dur=3.5, x;dur=abc, ;dur=1, engine;dur=2'
    assert server_timing.parse(value) == {"db": 3.5, "engine": 2.0}
    assert server_timing.parse("") == {}
