"""``irlvla baselines lolo``: leave-one-log-out RL on the real windows (baselines/lolo.py). Synthetic scenes stand
in for the real windows (each its own drive), tiny VLA runs for the fold runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from baselines.config import Overrides
from baselines.lolo import LoloJob, fold_name, run_lolo


def test_fold_names_are_short_and_safe():
    assert fold_name("av2:3bffdcff-c3a7-38b6-a0f2-64196d130958") == "av2-3bffdcff"
    assert fold_name("scenarionet:scene-0103") == "scenarionet-scene-0103"
    from baselines.lolo import fold_names

    twins = ["av2:3bffdcff-c3a7-38b6-a0f2-64196d130958", "av2:3bffdcff-0000-38b6-a0f2-64196d130958", "nus:x"]
    names = fold_names(twins + twins[:1])  # one entry per drive; colliding prefixes keep their full labels
    assert sorted(names.values()) == sorted(twins) and "nus-x" in names
    assert all(len(n) > len("av2-3bffdcff") for n, log in names.items() if log.startswith("av2"))


def test_a_distilling_variant_distils_on_all_the_windows_of_its_fold(tmp_path):
    from baselines.config import load_config
    from baselines.lolo import fold_overrides

    job = LoloJob(preset="paper", overrides=Overrides(sets=["total_timesteps=64"]))
    greedy = fold_overrides(job, "ppo-vla-rwm-greedy", tmp_path / "fold", 92)
    cfg = load_config("ppo-vla-rwm-greedy", "paper", greedy.as_list())
    assert (cfg.env["num_scenes"], cfg.distill.num_scenes, cfg.total_timesteps) == (92, 92, 64)
    assert cfg.env["split"] == str((tmp_path / "fold").resolve())
    plain = fold_overrides(job, "ppo-vla-epdms", tmp_path / "fold", 92).as_list()
    assert not any(s.startswith("distill.") for s in plain)  # no distillation: the config stays as it was


def test_folds_restrict_training_and_the_table_to_the_chosen_drives(tmp_path, checkpoints, monkeypatch):
    from baselines.lolo import lolo_command
    from irlvla_gym.evaluation import real_data
    from irlvla_gym.scenes.synthetic import iter_scenes

    windows = [("av2", s) for s in iter_scenes("synthetic-val", num=3)]
    monkeypatch.setattr(real_data, "iter_real_scenes", lambda data_dir, **kw: iter(windows))
    logs = [f"synthetic:{s.metadata.log_name}" for _, s in windows]
    chosen = fold_name(logs[1])
    job = LoloJob(variants=("ppo-vla-epdms",), preset="quick", out=str(tmp_path), references=("bc_default",),
                  folds=(chosen,), overrides=Overrides(sets=_tiny_sets(checkpoints)), resamples=100,
                  progress=False)
    doc = json.loads(run_lolo(job)["json"].read_text())
    assert doc["folds"] == {chosen: logs[1]} and list(doc["per_log"]) == [logs[1]]
    assert sorted(p.name for p in tmp_path.glob("ppo-vla-epdms-no-*")) == [f"ppo-vla-epdms-no-{chosen}"]
    assert all(r["scenes"] == 1 for r in doc["epdms"]["rows"]) and "1 held-out drive" in doc["set"]
    line = lolo_command(job)
    assert f"--folds {chosen}" in line and "--set total_timesteps=32" in line
    assert line in (tmp_path / "lolo.md").read_text()
    with pytest.raises(ValueError, match="not a drive"):
        run_lolo(LoloJob(out=str(tmp_path), folds=("av2-nothere",), progress=False))


def _tiny_sets(checkpoints) -> list[str]:
    return ["total_timesteps=32", "n_envs=2", "checkpoint_every=32", "ppo.n_steps=16", "ppo.batch_size=16",
            "ppo.n_epochs=1", "hooks=[]", f"pretrained={checkpoints['gaussian']}",
            "env.obs_config={camera_size: [32, 64], bev_size: [64, 64]}"]


def test_each_window_is_scored_by_the_fold_that_never_trained_on_its_drive(tmp_path, checkpoints, monkeypatch):
    from irlvla_gym.evaluation import real_data
    from irlvla_gym.scenes.store import SceneStore
    from irlvla_gym.scenes.synthetic import iter_scenes

    windows = [("av2", s) for s in iter_scenes("synthetic-val", num=3)]
    monkeypatch.setattr(real_data, "iter_real_scenes", lambda data_dir, **kw: iter(windows))
    from irlvla_gym.cli import main

    argv = ["baselines", "lolo", "--variants", "ppo-vla-epdms", "--preset", "quick", "--out", str(tmp_path),
            "--references", "bc_default", "--resamples", "100", "--no-progress"]
    assert main(argv + [a for s in _tiny_sets(checkpoints) for a in ("--set", s)]) == 0
    paths = {"md": tmp_path / "lolo.md", "json": tmp_path / "lolo.json"}
    logs = [f"synthetic:{s.metadata.log_name}" for _, s in windows]
    doc = json.loads(paths["json"].read_text())
    assert sorted(doc["folds"].values()) == sorted(logs)
    for fold, held_out in doc["folds"].items():  # a fold's store holds every window but its drive's
        store = SceneStore(tmp_path / "folds" / f"no-{fold}")
        assert sorted(map(str, store.tokens.tolist())) == sorted(s.token for (_, s), log in zip(windows, logs)
                                                               if log != held_out)
        assert (tmp_path / f"ppo-vla-epdms-no-{fold}" / "seed0" / "done.json").is_file()
    # the pooled row takes window j from the fold that held out window j's drive
    pooled = {r["agent"]: r for r in doc["epdms"]["rows"]}["ppo-vla-epdms (held-out drive)"]
    expected = []
    for j, log in enumerate(logs):
        fold = next(f for f, held in doc["folds"].items() if held == log)
        result = json.loads((tmp_path / "eval" / "real" / f"ppo-vla-epdms-no-{fold}-seed0.json").read_text())
        expected.append(np.nan_to_num(result["scores"]["epdms"][j]))
    assert pooled["mean"] == pytest.approx(100 * np.mean(expected))
    assert doc["epdms"]["clusters"] == 3 and pooled["scenes"] == 3
    md = paths["md"].read_text()
    assert "ppo-vla-epdms (held-out drive)" in md and "stand-still" in md and "constant-velocity" in md
    # a rerun reuses the stores, runs and results
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "real").glob("*.json")}
    run_lolo(LoloJob(variants=("ppo-vla-epdms",), preset="quick", out=str(tmp_path), references=("bc_default",),
                     overrides=Overrides(sets=_tiny_sets(checkpoints)), resamples=100, progress=False))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "real").glob("*.json")} == before


def test_bad_jobs_name_the_argument(tmp_path, monkeypatch):
    from irlvla_gym.evaluation import real_data
    from irlvla_gym.scenes.synthetic import iter_scenes

    with pytest.raises(ValueError, match="--baseline"):
        run_lolo(LoloJob(out=str(tmp_path), baseline="human", references=("bc_default",), progress=False))
    with pytest.raises(ValueError, match="--num-scenes"):
        run_lolo(LoloJob(out=str(tmp_path), overrides=Overrides(num_scenes=10), progress=False))
    two = [("av2", s) for s in iter_scenes("synthetic-val", num=2)]
    monkeypatch.setattr(real_data, "iter_real_scenes", lambda data_dir, **kw: iter(two))
    with pytest.raises(FileNotFoundError, match="no-such-variant"):
        run_lolo(LoloJob(out=str(tmp_path), variants=("ppo-vla-epdms", "no-such-variant"), progress=False))
    assert not (tmp_path / "folds").exists()  # nothing trained or built before the check
    one = [("av2", s) for s in iter_scenes("synthetic-val", num=1)]
    monkeypatch.setattr(real_data, "iter_real_scenes", lambda data_dir, **kw: iter(one))
    with pytest.raises(ValueError, match="at least 2"):
        run_lolo(LoloJob(out=str(tmp_path), progress=False))
