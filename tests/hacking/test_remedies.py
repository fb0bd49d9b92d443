"""Each remedy flag wires through: a tiny ppo-vla-rwm run per remedy runs, logs the probe scalars (and the refit
and anchor scalars) to TensorBoard, writes the probe files; the report writes the table and the curves."""

from __future__ import annotations

from pathlib import Path

import pytest
from .conftest import tiny_run_config

from baselines.hacking import REMEDIES


def _scalars(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in run_dir.glob("tb/**/events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny, rwm_data, probe):
    from baselines.hacking.experiment import train_remedy
    from baselines.hacking.remedies import RemedyConfig
    from reward_models import RewardWorldModel
    from reward_models.ensemble import EnsembleRewardModel, reinit_heads

    out = tmp_path_factory.mktemp("hacking")
    members = [reinit_heads(RewardWorldModel.from_pretrained(tiny["rwm"]), s) for s in range(2)]
    EnsembleRewardModel(members, beta=1.0).save_pretrained(out / "ensemble")
    cfg = tiny_run_config(tiny)
    done = {}
    for name in REMEDIES:
        remedy = RemedyConfig.for_remedy(name, refit_every=16, refit_max_plans=8, refit_steps=2,
                                         anchor_weight=0.1, anchor_batch=4)
        done[name] = train_remedy(name, cfg, remedy, 0, out / name / "seed0", probe, 16, rwm_data, out / "ensemble",
                                  eval_scenes=2, progress=False)
    return out, done


@pytest.mark.parametrize("name", REMEDIES)
def test_remedy_runs_and_logs(finished, name):
    out, done = finished
    run = out / name / "seed0"
    metrics = done[name]
    assert metrics["steps"] == 64 and 0.0 <= metrics["eval"]["epdms"] <= 1.0
    assert [s for s, _ in metrics["train_reward"]] == [32, 64]
    steps = [h["step"] for h in metrics_history(run)]
    assert steps[0] == 0 and steps[-1] == 64 and len(steps) >= 3  # start, after each update, end
    tags = _scalars(run)
    assert {"hacking/gap", "hacking/pred_reward", "hacking/true_epdms", "hacking/frac_overrated",
            "hacking/sub_gap/ep"} <= tags
    assert (run / "hacking_probe.png").is_file() and (run / "network" / "model.safetensors").is_file()
    if name == "ensemble":
        assert "hacking/pred_std" in tags and "hacking/ref_gap" in tags
    if name == "refit":
        assert metrics["refit"]["refits"] >= 1 and metrics["refit"]["plans_added"] == 8
        assert metrics["refit"]["seconds_per_refit"] > 0 and 0 < metrics["refit"]["fraction_of_wall"] < 1
        assert "refit/seconds" in tags and (run / "relabelled_plans.npz").is_file()
    else:
        assert "refit" not in metrics
    if name == "anchor":
        assert "anchor/kl_ref" in tags
    else:
        assert "anchor/kl_ref" not in tags


def metrics_history(run: Path) -> list[dict]:
    import json

    return json.loads((run / "hacking_probe.json").read_text())["history"]


def test_report(finished):
    from baselines.hacking.report import write_report

    out, done = finished
    files = write_report(out, {k: [v] for k, v in done.items()}, {"epdms": 0.5, "scenes": 2}, {"preset": "test"}, 3)
    text = files["md"].read_text()
    assert all(f"| {name} |" in text for name in REMEDIES)
    assert files["png"].is_file() and files["csv"].read_text().count("\n") == 1 + len(REMEDIES)


def test_probe_hook_in_baselines_runner(tmp_path, tiny):
    """The probe as a baselines training hook (config ``hooks``) inside the unmodified baselines runner."""
    from baselines.config import load_config
    from baselines.runner import train_run
    from .conftest import SMALL_OBS

    cfg = load_config("ppo-vla-rwm", "quick", [{
        "total_timesteps": 64, "n_envs": 4, "pretrained": str(tiny["vla"]), "reward": f"rwm:{tiny['rwm']}",
        "env": {"num_scenes": 4, "obs_config": SMALL_OBS}, "ppo": {"n_steps": 8, "batch_size": 16, "n_epochs": 1},
        "hook_interval": 32, "hooks": [{"class": "baselines.hacking.probe:ProbeHook", "kwargs": {"num_scenes": 2}}],
        "checkpoint_every": 64}])
    train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    run = tmp_path / "ppo-vla-rwm" / "seed0"
    assert (run / "hacking_probe.png").is_file()
    assert [h["step"] for h in metrics_history(run)][-1] == 64
    assert "hacking/gap" in _scalars(run)


def test_presets_are_budgets_of_one_registry():
    """quick is the HackingBudget defaults, full overrides some of them (the values of the experiment's README)."""
    from baselines.hacking.config import PRESETS, HackingBudget, HackingConfig, budget
    from baselines.hacking.experiment import preset_overrides

    assert budget("quick") == HackingBudget() and tuple(PRESETS) == ("quick", "full")
    full = budget("full")
    assert (full.run_preset, dict(full.run), full.probe_scenes, full.probe_every, full.eval_scenes,
            full.rwm_data_scenes) == ("full", {"total_timesteps": 100000, "env": {"num_scenes": 2000}}, 64, 4096, 300,
                                      2400)
    assert dict(full.remedy) == {"ensemble_members": 4, "ensemble_beta": 1.0, "ensemble_epochs": 4,
                                 "refit_every": 8192, "refit_max_plans": 1024, "refit_steps": 50, "anchor_kind": "kl",
                                 "anchor_weight": 0.01}
    assert preset_overrides("quick") == {"total_timesteps": 4096}
    with pytest.raises(ValueError, match="no preset 'huge'"):
        HackingConfig(preset="huge")
    with pytest.raises(ValueError, match="remedy must be among"):
        HackingConfig(remedies=("none", "prayer"))
