"""Reward-greedy distillation before PPO (``distill:``): the plan file, the fine-tuned policy PPO starts from, and a
resumed run that redoes nothing finished."""

from __future__ import annotations

import numpy as np

from baselines.config import load_config
from baselines.runner import run_dir_of, train_run

from .conftest import tiny_overrides

DISTILL = {"epochs": 2, "num_scenes": 8, "samples": 4, "batch_size": 4, "val_scenes": 4, "val_score_scenes": 2}


def test_distill_then_ppo_starts_from_the_distilled_policy(tmp_path, checkpoints, monkeypatch):
    import baselines.sb3_ppo

    variant = "ppo-vla-rwm-greedy"
    overrides = tiny_overrides(variant, checkpoints)
    overrides[0]["distill"].update(DISTILL)
    cfg = load_config(variant, "quick", overrides)
    started_from = []
    real_train = baselines.sb3_ppo.train_ppo

    def recording_train(run_cfg, seed, run_dir, progress=True):
        started_from.append(run_cfg.pretrained)
        return real_train(run_cfg, seed, run_dir, progress)

    monkeypatch.setattr(baselines.sb3_ppo, "train_ppo", recording_train)
    done = train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    run = run_dir_of(tmp_path, variant, 0)
    policy = run / "distill" / "policy"
    assert done["steps"] == 64 and started_from == [str(policy)] and done["distill_s"] > 0
    assert (policy / "model.safetensors").is_file() and (policy / "bc_metrics.json").is_file()
    with np.load(run / "distill" / "greedy_plans.npz") as f:
        assert f["plans"].shape == (8, 8, 3) and len(f["tokens"]) == 8

    # an interrupted run (no done.json) resumes PPO without recomputing the picks or the fine-tuning
    plans_mtime = (run / "distill" / "greedy_plans.npz").stat().st_mtime_ns
    (run / "done.json").unlink()

    def no_bc(*args, **kwargs):
        raise AssertionError("the finished distillation was trained again")

    monkeypatch.setattr("irlvla_gym.policies.bc.train_bc", no_bc)
    train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    assert started_from == [str(policy)] * 2
    assert (run / "distill" / "greedy_plans.npz").stat().st_mtime_ns == plans_mtime


def test_distill_needs_a_vla_policy():
    import pytest

    with pytest.raises(ValueError, match="distill"):
        load_config("ppo-cnn-epdms", "quick", [{"distill": {"epochs": 2}}])
