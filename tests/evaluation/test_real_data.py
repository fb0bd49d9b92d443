"""``irlvla check-scorer`` on the real samples in ../shared/data (skipped when absent): issue 3's sanity targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from irlvla_gym.evaluation.real_data import AV2_DIR, format_table, iter_real_scenes, run_check

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / AV2_DIR).is_dir(), reason=f"real samples not found at {DATA}")


@pytest.fixture(scope="module")
def check():
    # Every other 0.5 s window (~57 of 113 scenes) keeps the test fast; the full set gives the same picture
    # (README / report numbers come from stride 1).
    scenes = list(iter_real_scenes(DATA, stride=2))
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
