"""Item 4 of the trust issue: a leaderboard worker that dies marks its scene failed; the run finishes."""

from __future__ import annotations

import json
import time

import pytest

AGENT = '''
import os
import numpy as np

CRASH_TOKEN = {token!r}


class CrashAgent:
    """Stands in for a segfault / OOM kill: the process exits at once on one scene."""

    name = "crashy"
    obs_keys = ()

    def plan(self, observation, scene):
        if scene.token == CRASH_TOKEN:
            os._exit(3)
        return np.zeros((8, 3))
'''


@pytest.fixture
def crash_agent(tmp_path, monkeypatch):
    from irlvla_gym.scenes.source import SceneSource

    token = SceneSource("synthetic-test").load(1).token
    (tmp_path / "crash_agent_mod.py").write_text(AGENT.format(token=token))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "crash_agent_mod:CrashAgent"


def test_dead_worker_marks_its_scene_failed_and_the_run_finishes(tmp_path, crash_agent):
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    out = tmp_path / "lb"
    out.mkdir()
    (out / "leaderboard.md").write_text("stale table of an older run\n")
    (out / "leaderboard.csv").write_text("stale\n")
    t = time.perf_counter()
    result = run_leaderboard(LeaderboardConfig(agents=("constant-velocity", crash_agent), num_scenes=3, workers=2,
                                               progress=False, out=out))
    assert time.perf_counter() - t < 120
    assert [r["index"] for r in result.records] == [0, 1, 2]
    dead = result.records[1]
    assert "worker process died (exit code 3)" in dead["scene_error"]
    rows = {row["agent"]: row for row in result.rows}
    assert rows["crashy"]["errors"] == 1 and rows["crashy"]["scenes"] == 3
    assert rows["constant-velocity"]["errors"] == 1  # which agent killed the process cannot be known
    assert result.records[0]["agents"]["constant-velocity"]["error"] is None
    assert result.records[2]["agents"]["crashy"]["error"] is None  # the replacement worker went on
    assert "stale" not in (out / "leaderboard.md").read_text()
    assert "stale" not in (out / "leaderboard.csv").read_text()
    assert json.loads((out / "leaderboard.json").read_text())


def test_outputs_of_a_previous_run_are_removed_when_a_run_fails(tmp_path, monkeypatch):
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard
    from irlvla_gym.leaderboard import runner

    out = tmp_path / "lb"
    out.mkdir()
    (out / "leaderboard.md").write_text("stale table of an older run\n")

    def broken(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, like the backends

    monkeypatch.setattr(runner, "_local_records", broken)
    with pytest.raises(KeyboardInterrupt):
        run_leaderboard(LeaderboardConfig(agents=("constant-velocity",), num_scenes=1, progress=False, out=out))
    assert not (out / "leaderboard.md").exists()


def test_dead_ray_worker_is_restarted_and_its_scene_marked_failed(tmp_path, crash_agent, monkeypatch):
    """The Ray backend: the actor whose process dies is restarted, its scene retried once and then recorded as
    failed; the other scenes' results are kept (Ray's own actor restart and task retry)."""
    ray = pytest.importorskip("ray")
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # Ray's worker processes import the crash agent's module
    try:
        result = run_leaderboard(LeaderboardConfig(agents=("constant-velocity", crash_agent), num_scenes=3,
                                                   workers=2, backend="ray", progress=False, out=None))
    finally:
        ray.shutdown()
    assert [r["index"] for r in result.records] == [0, 1, 2]
    assert "Ray worker failed on scene 1" in result.records[1]["scene_error"]
    assert result.records[1]["agents"]["crashy"]["scores"]["epdms"] == 0.0
    assert result.records[0]["agents"]["crashy"]["error"] is None
    assert result.records[2]["agents"]["crashy"]["error"] is None
    assert result.records[2]["agents"]["constant-velocity"]["scores"]["epdms"] > 0
