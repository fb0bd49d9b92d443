"""The leaderboard runner: determinism (repeat, worker count, Ray), failing agents, outputs, the CLI."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from irlvla_gym.leaderboard import LeaderboardConfig, MissingExtraError, run_leaderboard
from irlvla_gym.leaderboard.report import TIMING_COLUMNS


class RaisingAgent:
    """Fails on every scene whose index is odd; drives the expert plan elsewhere."""

    name = "raiser"
    obs_keys = ()

    def plan(self, observation, scene):
        if int(scene.token.rsplit("-", 1)[-1]) % 2:
            raise RuntimeError(f"boom in {scene.token}")
        return scene.ego.future


class BadShapeAgent:
    name = "bad-shape"
    obs_keys = ()

    def plan(self, observation, scene):
        return np.zeros((4, 3))


def _strip_timing(records):
    out = json.loads(json.dumps(records))
    for r in out:
        for entry in r["agents"].values():
            entry.pop("plan_seconds")
    return out


def _rows_without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


AGENTS = ("human", "constant-velocity", "pdm-closed", "irlvla_demo_plugin:StraightAgent")


def test_deterministic_across_repeats_and_worker_counts(demo_plugin, tmp_path):
    one = run_leaderboard(LeaderboardConfig(agents=AGENTS, num_scenes=3, workers=1, progress=False,
                                            out=tmp_path / "a"))
    again = run_leaderboard(LeaderboardConfig(agents=AGENTS, num_scenes=3, workers=1, progress=False))
    two = run_leaderboard(LeaderboardConfig(agents=AGENTS, num_scenes=3, workers=2, progress=False,
                                            out=tmp_path / "b"))
    assert [r["agent"] for r in one.rows] == ["human", "constant-velocity", "pdm-closed", "demo-straight"]
    assert _strip_timing(one.records) == _strip_timing(again.records) == _strip_timing(two.records)
    assert _rows_without_timing(one.rows) == _rows_without_timing(two.rows)
    assert all(r["scenes"] == 3 and r["errors"] == 0 for r in one.rows)
    assert [r["token"] for r in one.records] == [f"synthetic-test-{i:05d}" for i in range(3)]
    # The tables on disk are identical too (minus timing).
    a = list(csv.DictReader(open(tmp_path / "a" / "leaderboard.csv")))
    b = list(csv.DictReader(open(tmp_path / "b" / "leaderboard.csv")))
    assert _rows_without_timing(a) == _rows_without_timing(b)


def test_output_files(tmp_path):
    result = run_leaderboard(LeaderboardConfig(agents=("human", "constant-velocity"), num_scenes=2, progress=False,
                                               out=tmp_path))
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| agent | epdms |" in md and "| human |" in md and "constant-velocity" in md
    rows = list(csv.DictReader(open(tmp_path / "leaderboard.csv")))
    assert [r["agent"] for r in rows] == ["human", "constant-velocity"]
    for name in ("epdms", "pdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "scenes", "errors",
                 "plan_s"):
        assert name in rows[0]
    assert float(rows[0]["epdms"]) == pytest.approx(result.rows[0]["epdms"])
    doc = json.loads((tmp_path / "leaderboard.json").read_text())
    assert doc["config"]["agents"] == ["human", "constant-velocity"] and len(doc["scenes"]) == 2
    assert doc["rows"][1]["scenes"] == 2 and "wall_seconds" in doc
    # EPDMS of the table = mean of the per-scene EPDMS in the JSON.
    per_scene = [s["agents"]["human"]["scores"]["epdms"] for s in doc["scenes"]]
    assert doc["rows"][0]["epdms"] == pytest.approx(np.mean(per_scene))


def test_explicit_scene_list_gives_the_split_records(test_scenes):
    """LeaderboardConfig.scenes (e.g. real windows converted in memory) evaluates those scenes like a split."""
    cfg = dict(agents=("human", "constant-velocity"), progress=False)
    by_split = run_leaderboard(LeaderboardConfig(num_scenes=3, **cfg))
    by_list = run_leaderboard(LeaderboardConfig(split="my-list", scenes=list(test_scenes), num_scenes=None, **cfg))
    assert _strip_timing(by_list.records) == _strip_timing(by_split.records)
    first_two = run_leaderboard(LeaderboardConfig(split="my-list", scenes=list(test_scenes), num_scenes=2, **cfg))
    assert [r["token"] for r in first_two.records] == [s.token for s in test_scenes[:2]]
    from irlvla_gym.leaderboard.report import config_dict

    assert config_dict(by_list.config)["scenes"] == "3 scenes" and config_dict(by_split.config)["scenes"] is None


def test_agent_that_raises_scores_zero_and_the_run_goes_on():
    result = run_leaderboard(LeaderboardConfig(agents=("human", RaisingAgent(), BadShapeAgent()), num_scenes=3,
                                               workers=2, progress=False))
    human, raiser, bad = result.rows
    assert raiser["errors"] == 1 and bad["errors"] == 3 and human["errors"] == 0
    assert "RuntimeError: boom in synthetic-test-00001" in raiser["error_messages"][0]
    assert "shape" in bad["error_messages"][0] and len(bad["error_messages"]) == 3
    by_scene = [r["agents"] for r in result.records]
    assert by_scene[1]["raiser"]["scores"]["epdms"] == 0.0 and by_scene[1]["raiser"]["error"]
    # Where the raiser did plan, it drove the expert plan: same scores as the human row.
    for i in (0, 2):
        assert by_scene[i]["raiser"]["scores"] == by_scene[i]["human"]["scores"]
    assert raiser["epdms"] == pytest.approx((by_scene[0]["human"]["scores"]["epdms"]
                                             + by_scene[2]["human"]["scores"]["epdms"]) / 3)
    assert bad["epdms"] == 0.0 and human["scenes"] == 3


def test_ray_backend_missing_names_the_extra(monkeypatch):
    from irlvla_gym.leaderboard.runner import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'irlvla-gym\[ray\]'"):
        import_ray()
    with pytest.raises(MissingExtraError):
        run_leaderboard(LeaderboardConfig(agents=("human",), num_scenes=1, backend="ray", progress=False))


def test_ray_backend_matches_local():
    ray = pytest.importorskip("ray")
    cfg = dict(agents=("human", "constant-velocity"), num_scenes=2, progress=False)
    local = run_leaderboard(LeaderboardConfig(**cfg))
    try:
        remote = run_leaderboard(LeaderboardConfig(backend="ray", workers=1, **cfg))
    finally:
        ray.shutdown()
    assert _strip_timing(remote.records) == _strip_timing(local.records)


def test_cli(tmp_path, capsys):
    from irlvla_gym.cli import main

    assert main(["leaderboard", "--list"]) == 0
    assert "constant-velocity" in capsys.readouterr().out
    assert main(["leaderboard", "--agents", "human", "--num-scenes", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert "| human |" in capsys.readouterr().out
    assert (tmp_path / "leaderboard.md").is_file()
    assert main(["leaderboard", "--agents", "nope", "--num-scenes", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert "unknown agent 'nope'" in capsys.readouterr().err
