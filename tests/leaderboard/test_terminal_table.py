"""The two-stage table printed to the terminal is compact; the written files keep every column."""

from __future__ import annotations

from irlvla_gym.leaderboard.report import (ONE_STAGE_COLUMNS, TWO_STAGE_COLUMNS, TWO_STAGE_TERMINAL_COLUMNS,
                                           csv_text, terminal_table)


def _row(columns):
    return {c: ("agent-x" if c == "agent" else 3 if c.endswith("scenes") or c == "errors" else 0.5) for c in columns}


def test_two_stage_terminal_table_is_compact_and_files_are_full():
    row = _row(TWO_STAGE_COLUMNS)
    text = terminal_table([row], two_stage=True)
    header = text.splitlines()[0]
    assert header.count("|") - 1 == len(TWO_STAGE_TERMINAL_COLUMNS) <= 10
    assert "s2_nc" not in text and "leaderboard.md" in text
    assert max(len(line) for line in text.splitlines()) < 120
    assert csv_text([row], two_stage=True).splitlines()[0].split(",") == list(TWO_STAGE_COLUMNS)


def test_one_stage_terminal_table_keeps_every_column():
    header = terminal_table([_row(ONE_STAGE_COLUMNS)]).splitlines()[0]
    assert header.count("|") - 1 == len(ONE_STAGE_COLUMNS)
