"""``irlvla check-scorer`` command line (without --navsim): source selection and its errors; one real run on the
AV2 forecasting sample when ../shared/data has it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irlvla_gym.cli import build_parser, main
from irlvla_gym.evaluation.check_cli import parse_sources
from irlvla_gym.evaluation.real_data import SOURCE_DIRS, SOURCES

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_sources_default_to_every_real_source() -> None:
    assert parse_sources(None) == SOURCES
    assert parse_sources("waymo, av2-forecasting,waymo") == ("waymo", "av2-forecasting")
    for bad in ("synthetic", "kitti", ","):
        with pytest.raises(ValueError, match="--sources"):
            parse_sources(bad)
    assert build_parser().parse_args(["check-scorer", "--sources", "waymo"]).sources == "waymo"


def test_bad_sources_and_missing_data_are_one_line_errors(tmp_path, capsys) -> None:
    assert main(["check-scorer", "--data", str(tmp_path), "--sources", "kitti", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sources" in err and "kitti" in err
    assert main(["check-scorer", "--data", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(f"{d}/" in err for d in SOURCE_DIRS.values())


@pytest.mark.skipif(not (DATA / SOURCE_DIRS["av2-forecasting"]).is_dir(),
                    reason=f"AV2 forecasting sample not found at {DATA}")
def test_one_source_runs_and_names_the_missing_ones(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / SOURCE_DIRS["av2-forecasting"]).symlink_to((DATA / SOURCE_DIRS["av2-forecasting"]).resolve())
    rc = main(["check-scorer", "--data", str(data), "--stride", "3", "--planners", "human", "--no-progress",
               "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out["counts"]) == ["av2-forecasting"] and out["counts"]["av2-forecasting"] >= 3
    assert out["table"]["human"]["av2-forecasting"]["dac"] == 1.0
    assert "left out" in captured.err and "waymo (scenarionet_waymo/)" in captured.err
