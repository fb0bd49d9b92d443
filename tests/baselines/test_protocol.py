"""The evaluation protocol (baselines/protocol.py, ``irlvla baselines compare``): tables, reuse of stored results
and their invalidation, the evaluation sets. Tiny sizes, rule-based agents and a fake finished run (no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import baselines.evaluate
import baselines.protocol as protocol
import irlvla_gym.leaderboard as leaderboard
from baselines.protocol import CompareJob, run_compare
from irlvla_gym.agents import FunctionAgent
from irlvla_gym.planners import ConstantVelocityPlanner


def _fake_run_agent(run_dir, name=None, trust_pickle=None):
    """A 'trained' agent whose plans depend on its seed: constant velocity scaled by 0.9 / 1.0."""
    factor = 0.9 + 0.1 * int(run_dir.name[4:])

    def plan(observation, scene):
        return ConstantVelocityPlanner().plan(scene) * factor

    return FunctionAgent(plan, name=name)


def _fake_runs(out, variant="fake", seeds=(0, 1)):
    for seed in seeds:
        run = out / variant / f"seed{seed}"
        (run / "network").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"variant": variant, "seed": seed}))
        (run / "network" / "model.safetensors").write_bytes(b"weights %d" % seed)
        (run / "done.json").write_text("{}")
    (out / variant / "seed7").mkdir()  # unfinished: no done.json, left out


@pytest.fixture
def calls(monkeypatch):
    """Fake run agents, and every run_leaderboard call recorded as its list of agent names."""
    made: list[list[str]] = []
    real = leaderboard.run_leaderboard

    def counting(config):
        made.append([getattr(a, "name", a) for a in config.agents])
        return real(config)

    monkeypatch.setattr(baselines.evaluate, "load_run_agent", _fake_run_agent)
    monkeypatch.setattr(leaderboard, "run_leaderboard", counting)
    return made


def _job(out, **kw):
    base = dict(out=str(out), references=("human",), baseline="constant-velocity", sets=("synthetic-test",),
                test_scenes=3, resamples=200, progress=False)
    base.update(kw)
    return CompareJob(**base)


def test_table_contents_reuse_and_invalidation(tmp_path, calls, monkeypatch):
    _fake_runs(tmp_path)
    paths = run_compare(_job(tmp_path))
    assert calls == [["stand-still", "constant-velocity", "human", "fake-seed0", "fake-seed1"]]
    doc = json.loads(paths["json"].read_text())
    table = doc["sets"]["synthetic-test"]
    rows = {r["agent"]: r for r in table["epdms"]["rows"]}
    assert list(rows) == ["stand-still", "constant-velocity", "human", "fake"]
    assert rows["fake"]["seeds"] == 2 and rows["human"]["seeds"] == 1 and table["scenes"] == 3
    assert rows["constant-velocity"]["delta"] == 0.0 and rows["constant-velocity"]["delta_ci"] == [0.0, 0.0]
    # a row's mean is the leaderboard's mean on the same scenes; the delta is paired on the stored per-scene scores
    lb = {r["agent"]: r for r in leaderboard.run_leaderboard(leaderboard.LeaderboardConfig(
        agents=("constant-velocity", "human", "stand-still"), num_scenes=3, progress=False)).rows}
    for name in ("constant-velocity", "human", "stand-still"):
        assert rows[name]["mean"] == pytest.approx(100 * lb[name]["epdms"])
        assert table["columns"]["nc"][name] == pytest.approx(100 * lb[name]["nc"])
    stored = {k: json.loads((tmp_path / "eval" / "synthetic-test" / f"{k}.json").read_text())
              for k in ("constant-velocity", "human", "fake-seed0", "fake-seed1")}
    assert stored["human"]["tokens"] == [f"synthetic-test-{i:05d}" for i in range(3)]
    per_scene = {k: np.array(v["scores"]["epdms"]) for k, v in stored.items()}
    fake_mean = (per_scene["fake-seed0"] + per_scene["fake-seed1"]) / 2
    assert rows["fake"]["delta"] == pytest.approx(100 * np.mean(fake_mean - per_scene["constant-velocity"]))
    assert rows["human"]["delta"] == pytest.approx(100 * np.mean(per_scene["human"] - per_scene["constant-velocity"]))
    md = paths["md"].read_text()
    assert "## synthetic-test (first 3 scenes, one-stage)" in md
    assert "| fake | 2 | 3 |" in md and "| stand-still | 1 | 3 |" in md and "Per-seed EPDMS: fake" in md
    assert "Δ vs constant-velocity [95% CI]" in md and "| PDMS | NC | DAC |" in md and "| HC |" in md

    # rerun: everything reused, same numbers
    calls.clear()
    assert json.loads(run_compare(_job(tmp_path)).get("json").read_text())["sets"] == doc["sets"]
    assert calls == []
    # new weights of one run: only that run is evaluated again
    (tmp_path / "fake" / "seed1" / "network" / "model.safetensors").write_bytes(b"retrained")
    run_compare(_job(tmp_path))
    assert calls == [["fake-seed1"]]
    # another scene count: everything again; --recompute: everything again
    calls.clear()
    run_compare(_job(tmp_path, test_scenes=2))
    run_compare(_job(tmp_path, test_scenes=2, recompute=True))
    assert [len(c) for c in calls] == [5, 5]
    # other scoring code: everything again
    calls.clear()
    monkeypatch.setattr(protocol, "scoring_code_digest", lambda: "edited")
    run_compare(_job(tmp_path, test_scenes=2, variants=("fake",), seeds=(0,)))
    assert calls == [["stand-still", "constant-velocity", "human", "fake-seed0"]]


def test_two_stage_and_real_sets_through_the_cli(tmp_path, calls, monkeypatch, capsys):
    """synthetic-hard is two-stage (per-scene group scores whose mean is the leaderboard's two-stage EPDMS); the real
    set evaluates the windows iter_real_scenes finds (stand-ins here) and is skipped with a note without data."""
    from irlvla_gym.cli import main
    from irlvla_gym.evaluation import real_data
    from irlvla_gym.scenes.synthetic import iter_scenes

    windows = [("av2", s) for s in iter_scenes("synthetic-val", num=2)]
    original = real_data.iter_real_scenes
    monkeypatch.setattr(real_data, "iter_real_scenes", lambda data_dir, **kw: iter(windows))
    argv = ["baselines", "compare", "--out", str(tmp_path), "--references", "pdm-closed", "--baseline",
            "stand-still", "--sets", "synthetic-hard", "real", "--hard-scenes", "1", "--resamples", "100",
            "--no-progress"]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "paired.json").read_text())
    hard = {r["agent"]: r for r in doc["sets"]["synthetic-hard"]["epdms"]["rows"]}
    lb = {r["agent"]: r for r in leaderboard.run_leaderboard(leaderboard.LeaderboardConfig(
        split="synthetic-hard", agents=("stand-still", "constant-velocity", "pdm-closed"), num_scenes=1,
        two_stage=True, progress=False)).rows}
    for name, row in lb.items():
        assert hard[name]["mean"] == pytest.approx(100 * row["epdms"])
        assert doc["sets"]["synthetic-hard"]["columns"]["stage1_epdms"][name] == pytest.approx(
            100 * row["stage1_epdms"])
    real = doc["sets"]["real"]
    assert real["scenes"] == 2 and real["description"].startswith("2 real windows (2 av2) from 2 logs")
    # the bootstrap draws logs (here one window each), and the table breaks the deltas down per log
    assert real["epdms"]["clusters"] == 2 and doc["sets"]["synthetic-hard"]["per_log"] is None
    per_log = real["per_log"]
    assert list(per_log) == [f"synthetic:{s.metadata.log_name}" for _, s in windows]
    scores = {n: json.loads((tmp_path / "eval" / "real" / f"{n}.json").read_text())["scores"]["epdms"]
              for n in ("pdm-closed", "stand-still")}
    for j, entry in enumerate(per_log.values()):
        assert entry["scenes"] == 1 and entry["baseline"] == pytest.approx(100 * scores["stand-still"][j])
        assert entry["delta"]["pdm-closed"] == pytest.approx(100 * (scores["pdm-closed"][j] - scores["stand-still"][j]))
    assert "Per log (Δ vs stand-still" in (tmp_path / "paired.md").read_text()
    stored = json.loads((tmp_path / "eval" / "real" / "pdm-closed.json").read_text())
    assert stored["tokens"] == [s.token for _, s in windows] and stored["settings"]["scenes_digest"]
    assert "## real (2 real windows" in capsys.readouterr().out

    monkeypatch.setattr(real_data, "iter_real_scenes", original)  # the real one, on a folder without samples
    calls.clear()
    assert main(argv + ["--data", str(tmp_path / "no-data")]) == 0
    doc = json.loads((tmp_path / "paired.json").read_text())
    assert "real" not in doc["sets"] and doc["skipped"]["real"].startswith("skipped")
    assert "## real\n\nskipped" in (tmp_path / "paired.md").read_text()
    assert calls == []  # synthetic-hard reused


def test_errors_name_the_argument(tmp_path):
    _fake_runs(tmp_path)
    with pytest.raises(ValueError, match="baseline 'nope' is neither a reference"):
        run_compare(_job(tmp_path, baseline="nope"))
    with pytest.raises(ValueError, match=r"variants: no finished run .* \['other'\]"):
        run_compare(_job(tmp_path, variants=("other",)))
    with pytest.raises(ValueError, match="test_scenes must be >= 1"):
        _job(tmp_path, test_scenes=0)
    with pytest.raises(ValueError, match="sets: unknown evaluation set"):
        _job(tmp_path, sets=("navtest",))


def test_command_defaults_are_the_dataclass_defaults():
    from irlvla_gym.cli import build_parser
    from irlvla_gym.configs import from_args

    job = from_args(CompareJob, build_parser().parse_args(["baselines", "compare"]))
    assert job == CompareJob()
    assert job.baseline == "bc_default" and job.test_scenes == 500 and job.hard_scenes == 500
    assert job.sets == ("synthetic-test", "synthetic-hard", "real")
    assert {"stand-still", "constant-velocity", "bc_default"} <= set(job.references)


def test_real_set_of_other_sources():
    """``--real-sources``: the real set of other samples (a held-out real set: Waymo, AV2 forecasting), its own
    scene digest so results of the default set are never reused for it."""
    from irlvla_gym.evaluation.real_data import default_data_dir

    if not (default_data_dir() / "av2_forecasting").is_dir():
        pytest.skip("no ../shared/data/av2_forecasting")
    held_out = protocol.real_set(None, progress=False, sources=("av2-forecasting",))
    assert len(held_out.scenes) == 11 and "11 av2-forecasting" in held_out.description
    assert held_out.name == "real-av2-forecasting"  # its own results directory and table section
    assert CompareJob(real_sources=("waymo",)).real_sources == ("waymo",)
    default = protocol.real_set(None, progress=False)
    assert default.name == "real" and default.scenes_digest != held_out.scenes_digest
    # one cluster per drive: the 4 AV2 sensor logs and the nuScenes scene (the windows of a log are not independent)
    assert len(set(default.clusters)) == 5 and len(default.clusters) == len(default.scenes)
    assert set(held_out.clusters) == {f"av2-forecasting:{held_out.scenes[0].metadata.log_name}"}


def test_synthetic_val_is_a_tuning_set_outside_the_default_sets(tmp_path, calls):
    """``--sets synthetic-val``: the first --val-scenes scenes of the validation split (for choosing recipes), never
    among the default (reported) sets."""
    assert "synthetic-val" not in CompareJob().sets
    (val,) = protocol.eval_sets(_job(tmp_path, sets=("synthetic-val",), val_scenes=2))
    assert (val.split, val.num_scenes, val.two_stage) == ("synthetic-val", 2, False)
    run_compare(_job(tmp_path, sets=("synthetic-val",), val_scenes=2))
    doc = json.loads((tmp_path / "paired.json").read_text())
    assert doc["sets"]["synthetic-val"]["scenes"] == 2
    with pytest.raises(ValueError, match="val_scenes must be >= 1"):
        _job(tmp_path, val_scenes=0)


def test_compare_draws_the_worst_scenes_of_each_trained_row(tmp_path, calls):
    _fake_runs(tmp_path)
    run_compare(_job(tmp_path, figures=2, baseline="human"))  # the fake constant-velocity row loses to the human
    doc = json.loads((tmp_path / "paired.json").read_text())
    figures = doc["sets"]["synthetic-test"]["figures"]
    stored = {k: np.array(json.loads((tmp_path / "eval" / "synthetic-test" / f"{k}.json").read_text())["scores"]
                          ["epdms"]) for k in ("human", "fake-seed0", "fake-seed1")}
    loss = stored["human"] - (stored["fake-seed0"] + stored["fake-seed1"]) / 2
    worst = np.argsort(-loss, kind="stable")[:2]
    assert (loss[worst] > 1e-3).all()  # the fixture has two losing scenes to draw
    # only the trained row ("fake"), never the references, its two largest losses in order
    assert figures == [f"figures/synthetic-test/fake-{rank}-synthetic-test-{i:05d}.png"
                       for rank, i in enumerate(worst, start=1)]
    for name in figures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Worst scenes (figures): " in (tmp_path / "paired.md").read_text()
