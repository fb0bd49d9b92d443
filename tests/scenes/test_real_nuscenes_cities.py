"""nuScenes (via ScenarioNet) drivable area per city (issue real-data, 2): a folder of ``<city>_drivable_area.json``
files picks each scene's own city from its metadata; a single file of another city is one clear error naming both;
the logged human passes DAC with the human filter OFF on the real sample."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")

from irlvla_gym.scenes.scenarionet import (  # noqa: E402
    CityDrivableAreas, DrivableAreaCityError, city_matches, drivable_area_city, iter_scenes, load_scenario,
    scenario_city, scenes_from_scenario,
)
from irlvla_gym.scenes.scene import Scene, command_from_lateral  # noqa: E402
from irlvla_gym.scenes.sources import SkippedItem  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CITIES = SHARED / "nuscenes_drivable_areas"
SAMPLE = SHARED / "scenarionet_nuscenes" / "sd_nuscenes_v1.0-mini_scene-0103.pkl"
CITY_FILES = ("boston", "holland_village", "onenorth", "queenstown")
needs_data = pytest.mark.skipif(
    not (SAMPLE.is_file() and all((CITIES / f"{c}_drivable_area.json").is_file() for c in CITY_FILES)),
    reason="nuScenes ScenarioNet sample or per-city drivable areas not found in ../shared/data")


def test_city_names_match_the_nuscenes_and_nuplan_map_names():
    cases = {"boston-seaport": "boston", "singapore-onenorth": "onenorth", "singapore-queenstown": "queenstown",
             "singapore-hollandvillage": "holland_village", "us-ma-boston": "boston", "sg-one-north": "onenorth"}
    for location, city in cases.items():
        assert [c for c in CITY_FILES if city_matches(c, location)] == [city], location
    assert drivable_area_city("x/holland_village_drivable_area.json") == "holland_village"
    assert drivable_area_city("x/my_area.geojson") is None
    assert scenario_city({"metadata": {"map": "singapore-onenorth"}}) == "singapore-onenorth"
    assert scenario_city({"metadata": {"dataset": "waymo"}}) is None


@needs_data
@pytest.mark.parametrize("location,city", [("boston-seaport", "boston"), ("singapore-onenorth", "onenorth"),
                                           ("singapore-queenstown", "queenstown"),
                                           ("singapore-hollandvillage", "holland_village")])
def test_the_folder_picks_each_citys_file(location, city):
    areas = CityDrivableAreas(CITIES)
    assert set(areas.files) == set(CITY_FILES)
    assert areas.file_for(location, "scene") == CITIES / f"{city}_drivable_area.json"


@pytest.fixture(scope="module")
def scenario() -> dict:
    if not SAMPLE.is_file():
        pytest.skip("nuScenes ScenarioNet sample not found")
    return load_scenario(SAMPLE)


@pytest.fixture(scope="module")
def folder_scenes() -> list:
    if not (SAMPLE.is_file() and CITIES.is_dir()):
        pytest.skip("nuScenes ScenarioNet sample or per-city drivable areas not found")
    return list(iter_scenes(SAMPLE, drivable_area=CITIES))


@needs_data
def test_folder_build_equals_the_boston_file_and_drops_nothing(folder_scenes):
    skipped = [str(s) for s in folder_scenes if isinstance(s, SkippedItem)]
    assert not skipped, skipped
    scenes = [s for s in folder_scenes if isinstance(s, Scene)]
    assert len(scenes) == 29 and scenes[0].metadata.map_name == "boston-seaport"
    single = next(s for s in iter_scenes(SAMPLE, drivable_area=CITIES / "boston_drivable_area.json"))
    np.testing.assert_array_equal(scenes[0].map.drivable_area.rings.points, single.map.drivable_area.rings.points)
    inside = total = 0
    for s in scenes:
        area = shapely.unary_union(s.map.drivable_area.to_shapely())
        inside += int(shapely.contains_xy(area, s.ego.future[:, 0], s.ego.future[:, 1]).sum())
        total += len(s.ego.future)
    assert inside == total  # measured 100 % (232 / 232 future poses)


@needs_data
def test_human_passes_dac_with_the_filter_off(folder_scenes):
    """Measured: 29 / 29 windows of scene-0103 (Boston). The issue's tight left turn (human DAC 0 in 6 windows) is
    a Singapore scene that is not among the samples, so it cannot be measured here."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import HumanPlanner

    scenes = [s for s in folder_scenes if isinstance(s, Scene)]
    dac = np.array([float(score_plans(s, HumanPlanner().plan(s), human_filter=False).take(0)["dac"])
                    for s in scenes])
    assert np.mean(dac == 1.0) >= 0.98, [s.token for s, d in zip(scenes, dac) if d < 1]
    agree = np.mean([s.command == command_from_lateral(float(s.ego.future[-1, 1])) for s in scenes])
    assert agree >= 0.95  # measured 28 / 29


@needs_data
def test_a_file_of_another_city_is_one_error_naming_both():
    with pytest.raises(DrivableAreaCityError, match=r"'boston-seaport'.*onenorth_drivable_area\.json.*'onenorth'"):
        list(iter_scenes(SAMPLE, drivable_area=CITIES / "onenorth_drivable_area.json"))


@needs_data
def test_a_scene_without_city_metadata_takes_any_file(scenario):
    """Nothing to check against (WOMD files name no city): the given file is used as is."""
    anonymous = copy.deepcopy(scenario)
    del anonymous["metadata"]["map"]
    first = next(scenes_from_scenario(anonymous, drivable_area=CITIES / "boston_drivable_area.json"))
    assert isinstance(first, Scene) and first.map.drivable_area.count > 0


@needs_data
def test_a_folder_without_the_scenes_city_is_an_error(tmp_path, scenario):
    (tmp_path / "boston_drivable_area.json").symlink_to(CITIES / "boston_drivable_area.json")
    singapore = copy.deepcopy(scenario)
    singapore["metadata"]["map"] = "singapore-queenstown"
    with pytest.raises(DrivableAreaCityError, match=r"'singapore-queenstown'.*no file for it \(cities: boston\)"):
        next(scenes_from_scenario(singapore, drivable_area=tmp_path, source="sg.pkl"))


@needs_data
def test_cli_reports_the_mismatch_in_one_line(tmp_path, capsys):
    from irlvla_gym.cli import main

    code = main(["scenes", "build", "--source", "scenarionet", "--path", str(SAMPLE), "--drivable-area",
                 str(CITIES / "queenstown_drivable_area.json"), "--out", str(tmp_path / "store"), "--no-progress",
                 "--no-hooks"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "boston-seaport" in err and "queenstown" in err, err
    assert not (tmp_path / "store").exists()  # refused before a store folder was claimed
