"""``irlvla score`` end to end on a tiny store: good plans scored, bad plans get a per-token error and 0."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from irlvla_gym.cli import main
from irlvla_gym.evaluation.score_cli import check_plan, load_plans
from irlvla_gym.scenes.store import build_store
from irlvla_gym.scenes.testing import straight_road_scene


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "tiny"
    scenes = [straight_road_scene(speed=10.0, token="free"),
              straight_road_scene(speed=8.0, agents=[dict(x=40.0, y=0.0, vx=5.0)], token="follow"),
              straight_road_scene(speed=12.0, num_lanes=3, ego_lane=1, token="three-lanes")]
    build_store(scenes, out, split="test", source="handmade", progress=False)
    return out


def _expert(speed: float) -> list:
    plan = np.zeros((8, 3))
    plan[:, 0] = np.arange(1, 9) * 0.5 * speed
    return plan.tolist()


def test_check_plan_reasons() -> None:
    assert check_plan(_expert(10.0))[0].shape == (8, 3)
    assert "wrong shape" in check_plan(np.zeros((6, 3)))[1]
    assert "non-finite" in check_plan(np.full((8, 3), np.nan))[1]
    assert "absurd speed" in check_plan(np.array(_expert(10.0)) * 10)[1]
    assert "numeric" in check_plan([["a"] * 3] * 8)[1]


def test_score_end_to_end_with_bad_plans(store_dir: Path, tmp_path: Path, capsys) -> None:
    nan_plan = _expert(8.0)
    nan_plan[3][1] = float("nan")
    plans = {
        "free": _expert(10.0),  # the logged expert
        "follow": nan_plan,  # NaN -> error
        "three-lanes": _expert(12.0),
        "unknown-token": _expert(5.0),  # not in the store -> error
        "free-copy-wrong-shape": [[0.0, 0.0, 0.0]] * 5,
    }
    plans_path = tmp_path / "plans.json"
    plans_path.write_text(json.dumps(plans, allow_nan=True))
    out = tmp_path / "out"
    rc = main(["score", "--scenes", str(store_dir), "--plans", str(plans_path), "--out", str(out), "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "5 plans: 2 scored, 3 could not be scored" in captured.out
    assert "all plans" in captured.out and "scored only" in captured.out and "scores.csv" in captured.out
    assert "{" not in captured.out  # the JSON goes to --out, not the terminal
    assert "unknown-token: token not in the scenes" in captured.err

    rows = {r["token"]: r for r in csv.DictReader((out / "scores.csv").open())}
    assert set(rows) == set(plans)
    # The expert keeps 10 m/s where PDM-Closed (the EP normaliser) speeds up to the 15 m/s limit: EP < 1 only.
    assert rows["free"]["status"] == "ok" and 0.9 < float(rows["free"]["epdms"]) < 1.0
    assert float(rows["free"]["nc"]) == float(rows["free"]["ttc"]) == 1.0 and float(rows["free"]["ep"]) < 1.0
    assert float(rows["free"]["reference_progress_m"]) > float(rows["free"]["progress_m"]) > 30.0
    assert rows["three-lanes"]["status"] == "ok" and float(rows["three-lanes"]["epdms"]) > 0.9
    assert rows["follow"]["status"] == "error" and "non-finite" in rows["follow"]["error"]
    assert "wrong shape" in rows["free-copy-wrong-shape"]["error"]
    for token in ("follow", "unknown-token", "free-copy-wrong-shape"):
        assert all(float(rows[token][c]) == 0.0 for c in ("epdms", "pdms", "nc", "ep", "ttc"))

    per_token = json.loads((out / "scores.json").read_text())
    assert len(per_token) == 5 and per_token[0]["token"] == "free"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_scored"] == 2 and summary["num_errors"] == 3
    mean_ok = summary["mean_scored_only"]["epdms"]
    assert summary["mean"]["epdms"] == pytest.approx(mean_ok * 2 / 5)
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporary files


def test_score_npz_input_and_no_filter(store_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "plans.npz"
    np.savez(path, tokens=np.array(["free", "follow"]), plans=np.array([_expert(10.0), _expert(8.0)]))
    assert set(load_plans(path)) == {"free", "follow"}
    out = tmp_path / "out"
    assert main(["score", "--scenes", str(store_dir), "--plans", str(path), "--out", str(out), "--no-progress",
                 "--no-filter"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_scored"] == 2 and summary["settings"]["human_filter"] is False
    # token-keyed npz
    keyed = tmp_path / "keyed.npz"
    np.savez(keyed, **{"free": np.array(_expert(10.0))})
    assert set(load_plans(keyed)) == {"free"}


def test_score_rejects_unreadable_plan_files(store_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "plans.txt"
    bad.write_text("x")
    assert main(["score", "--scenes", str(store_dir), "--plans", str(bad), "--out", str(tmp_path / "o")]) == 2
    broken = tmp_path / "plans.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_plans(broken)


def test_readme_example_with_a_split_name_and_written_plans(tmp_path: Path, capsys, monkeypatch) -> None:
    """The documented pair of commands, verbatim (cwd = a fresh directory): write a plans file from a leaderboard
    agent, then score it against the split by name. The means equal the leaderboard's for the same agent."""
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--scenes", "synthetic-test", "--write-plans", "constant-velocity", "--num-scenes", "4",
                 "--plans", "plans.json", "--no-progress"]) == 0
    plans = json.loads(Path("plans.json").read_text())
    assert list(plans) == [f"synthetic-test-{i:05d}" for i in range(4)]
    assert np.asarray(plans["synthetic-test-00000"]).shape == (8, 3)
    assert main(["score", "--scenes", "synthetic-test", "--plans", "plans.json", "--out", "scores/",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 plans: 4 scored, 0 could not be scored" in out and "scored only" not in out
    summary = json.loads(Path("scores/summary.json").read_text())

    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    row = run_leaderboard(LeaderboardConfig(agents=["constant-velocity"], num_scenes=4, progress=False)).rows[0]
    assert summary["mean"]["epdms"] == pytest.approx(row["epdms"], abs=1e-9)


def test_write_plans_npz_and_bad_arguments(tmp_path: Path, capsys) -> None:
    path = tmp_path / "plans.npz"
    assert main(["score", "--scenes", "synthetic-test", "--write-plans", "stand-still", "--num-scenes", "2",
                 "--plans", str(path), "--no-progress"]) == 0
    assert set(load_plans(path)) == {"synthetic-test-00000", "synthetic-test-00001"}
    capsys.readouterr()
    # the old README path: one error naming the argument, with the split name to use instead
    assert main(["score", "--scenes", "runs/default/scenes/synthetic-test", "--plans", str(path), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--scenes runs/default/scenes/synthetic-test" in err and "did you mean --scenes synthetic-test" in err
    assert main(["score", "--scenes", "synthetic-test", "--plans", str(path)]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["score", "--scenes", "synthetic-test", "--write-plans", "no-such-agent", "--plans",
                 str(tmp_path / "p.json")]) == 2
    assert "unknown agent" in capsys.readouterr().err
    assert main(["score", "--scenes", "synthetic-test", "--write-plans", "human", "--plans",
                 str(tmp_path / "p.txt")]) == 2
    assert "--plans" in capsys.readouterr().err


def test_many_errors_are_summarised(store_dir: Path, tmp_path: Path, capsys) -> None:
    plans_path = tmp_path / "plans.json"
    plans_path.write_text(json.dumps({f"missing-{i}": _expert(5.0) for i in range(12)}))
    assert main(["score", "--scenes", str(store_dir), "--plans", str(plans_path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("error: missing-") == 5 and "and 7 more errors" in err
