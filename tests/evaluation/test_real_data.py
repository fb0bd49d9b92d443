"""``irlvla check-scorer`` on the real samples in ../shared/data (skipped when absent): issue 3's sanity targets, and
every real source of issue 22 (AV2 sensor logs, nuScenes with per-city drivable areas, Waymo, AV2 forecasting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from irlvla_gym.evaluation.real_data import (
    AV2_DIR, DEFAULT_SOURCES, NUSCENES_DRIVABLE_DIR, SOURCE_DIRS, SOURCES, CheckResult, format_table, iter_real_scenes,
    missing_sources, real_source_dirs, run_check,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / AV2_DIR).is_dir(), reason=f"real samples not found at {DATA}")
NEW_SOURCES = ("waymo", "av2-forecasting")
"""Sources check-scorer gained with issue 22 (beyond the protocol's fixed AV2 + nuScenes set)."""
needs_new_data = pytest.mark.skipif(
    not all((DATA / SOURCE_DIRS[s]).is_dir() for s in NEW_SOURCES),
    reason=f"Waymo / AV2 forecasting samples not found at {DATA}")


@pytest.fixture(scope="module")
def check():
    # Every other 0.5 s window (~57 of 113 scenes) keeps the test fast; the full set gives the same picture
    # (README / report numbers come from stride 1).
    scenes = list(iter_real_scenes(DATA, stride=2))
    return run_check(scenes, progress=False)


@pytest.fixture(scope="module")
def check_new():
    # The sources beyond the protocol's set, every other window (15 Waymo + 6 AV2 forecasting scenes).
    scenes = list(iter_real_scenes(DATA, stride=2, sources=NEW_SOURCES))
    return run_check(scenes, progress=False)


@needs_data
def test_check_runs_on_both_sources(check) -> None:
    assert set(check.counts) == {"av2", "nuscenes"} and all(n > 5 for n in check.counts.values())
    assert set(check.table) == {"human", "constant_velocity", "pdm_closed"}
    text = format_table(check)
    assert "human" in text and "EPDMS" in text


@needs_data
def test_human_reaches_the_target_and_constant_velocity_is_lower(check) -> None:
    human = check.table["human"]["all"]["epdms"]
    cv = check.table["constant_velocity"]["all"]["epdms"]
    assert cv < human - 0.1, (cv, human)
    # Human filter off. Holds with PDM-Closed's NAVSIM observation model (constant-velocity forecasts): the
    # margin is small (~0.91 at stride 1) because the samples are slow urban turns and queues where the human
    # waits and PDM-Closed (15 m/s default limit, no lights in the data) makes progress: human EP ~0.78.
    assert human >= 0.9, format_table(check)


@needs_data
def test_pdm_closed_is_within_a_few_points_of_the_human(check) -> None:
    human = check.table["human"]["all"]["epdms"]
    pdm = check.table["pdm_closed"]["all"]["epdms"]
    assert abs(pdm - human) < 0.08, (pdm, human)


@needs_data
def test_nuscenes_uses_its_citys_drivable_area(check) -> None:
    # scene-0103 is in Boston: the per-city folder picks boston_drivable_area.json, the human stays inside it
    assert (DATA / NUSCENES_DRIVABLE_DIR).is_dir()
    assert check.table["human"]["nuscenes"]["dac"] == 1.0, format_table(check)


@needs_new_data
def test_check_covers_waymo_and_av2_forecasting(check_new) -> None:
    assert set(check_new.counts) == set(NEW_SOURCES) and all(n >= 5 for n in check_new.counts.values())
    text = format_table(check_new)
    assert "av2-forecasting" in text and "waymo" in text
    for source in NEW_SOURCES:
        human = check_new.table["human"][source]
        cv = check_new.table["constant_velocity"][source]
        # issue 22: with the human filter off the logged human passes DAC in >= 98 % of windows on every source
        assert human["dac"] >= 0.98, (source, format_table(check_new))
        assert human["nc"] == 1.0 and cv["epdms"] <= human["epdms"], (source, format_table(check_new))


# ------------------------------------------------------------------------------------------- discovery (no data)


def test_every_source_has_a_folder() -> None:
    assert set(SOURCES) == {"av2", "nuscenes", "waymo", "av2-forecasting"}
    assert set(DEFAULT_SOURCES) == {"av2", "nuscenes"}  # the protocol's fixed real set stays as published
    assert {p.name for p in real_source_dirs("x").values()} == set(SOURCE_DIRS.values())


def test_missing_folders_are_left_out_or_named(tmp_path) -> None:
    assert missing_sources(tmp_path) == list(SOURCES)
    with pytest.raises(FileNotFoundError, match="av2_forecasting/"):
        next(iter_real_scenes(tmp_path, sources=SOURCES))
    with pytest.raises(ValueError, match="unknown real source"):
        next(iter_real_scenes(tmp_path, sources=("kitti",)))
    (tmp_path / SOURCE_DIRS["waymo"]).mkdir()  # present but empty: the adapter's skip, no scene
    skipped: list = []
    assert list(iter_real_scenes(tmp_path, sources=SOURCES, on_skip=lambda s, item: skipped.append(s))) == []
    assert skipped == ["waymo"] and missing_sources(tmp_path) == ["av2", "nuscenes", "av2-forecasting"]


def test_nuscenes_without_drivable_areas_is_an_error_naming_the_folder(tmp_path) -> None:
    (tmp_path / SOURCE_DIRS["nuscenes"]).mkdir()
    with pytest.raises(FileNotFoundError, match=NUSCENES_DRIVABLE_DIR):
        next(iter_real_scenes(tmp_path, sources=("nuscenes",)))


def test_table_fits_long_source_names() -> None:
    cols = {c: 1.0 for c in ("epdms", "pdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec")}
    result = CheckResult(table={"human": {"av2-forecasting": cols, "all": cols}}, counts={"av2-forecasting": 3})
    lines = format_table(result).splitlines()
    assert len({len(line) for line in lines}) == 1, lines  # aligned
    assert lines[2].split()[:3] == ["human", "av2-forecasting", "3"]
