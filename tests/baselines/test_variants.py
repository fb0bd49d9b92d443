"""Every variant trains end to end with a tiny budget and leaves a checkpoint, a learning curve and an eval row; a
rerun skips finished runs and resumes an interrupted one; the table writer produces its files."""

from __future__ import annotations

import json

import pytest
from .conftest import tiny_overrides

from baselines.config import VARIANTS, load_config
from baselines.runner import run_dir_of, train_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, checkpoints):
    """All six variants, seed 0, trained and evaluated once into one output root."""
    out = tmp_path_factory.mktemp("baselines")
    done = {v: train_run(load_config(v, "quick", tiny_overrides(v, checkpoints)), 0, out, progress=False)
            for v in VARIANTS}
    return out, done


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_end_to_end(finished, variant):
    out, done = finished
    run = run_dir_of(out, variant, 0)
    metrics = done[variant]
    assert metrics["steps"] == 64
    assert 0.0 <= metrics["eval"]["epdms"] <= 1.0 and metrics["eval"]["scenes"] == 2
    assert metrics["eval"]["errors"] == 0
    assert metrics["ms_per_step"] > 0 and metrics["env_ms_per_step"] > 0
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 64
    assert (run / "eval.json").is_file() and (run / "done.json").is_file()
    assert len((run / "curve.csv").read_text().strip().splitlines()) == 1 + 2  # header + 2 rollouts of 32 steps
    if variant == "ppo-cnn-epdms":
        assert (run / "model.zip").is_file() and (run / "model.irlvla.json").is_file()
    else:
        assert (run / "network" / "model.safetensors").is_file()
    if variant in ("ppo-vla-epdms", "ppo-vla-rwm", "ppo-vla-rwm-greedy", "ppo-vla-rwm-bc"):
        assert metrics["vec_env"] in ("native", "dummy")


def test_rerun_skips_finished_run(finished, monkeypatch, checkpoints):
    out, done = finished
    import baselines.sb3_ppo

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(baselines.sb3_ppo, "train_ppo", fail)
    variant = "ppo-vla-epdms"
    again = train_run(load_config(variant, "quick", tiny_overrides(variant, checkpoints)), 0, out, progress=False)
    assert again == json.loads(json.dumps(done[variant]))


def test_rerun_with_other_config_refuses(finished, checkpoints):
    out, _ = finished
    variant = "ppo-vla-epdms"
    run = run_dir_of(out, variant, 0)
    (run / "done.json").rename(run / "done.json.bak")
    try:
        cfg = load_config(variant, "quick", tiny_overrides(variant, checkpoints, total_timesteps=128))
        with pytest.raises(ValueError, match="different config"):
            train_run(cfg, 0, out, progress=False)
    finally:
        (run / "done.json.bak").rename(run / "done.json")


@pytest.mark.parametrize("variant", ["ppo-vla-rwm-bc", "dppo-vla-rwm"])
def test_interrupted_run_resumes_from_checkpoint(tmp_path, checkpoints, monkeypatch, capsys, variant):
    """Training dies after the checkpoint at step 32; the same command resumes from it and finishes at 64."""
    import baselines.hooks as hooks

    cfg = load_config(variant, "quick", tiny_overrides(variant, checkpoints, checkpoint_every=32))
    original = hooks.HookRunner.maybe_run

    def crash(self, step, snapshot):
        if step >= 32:
            raise KeyboardInterrupt("simulated crash")
        return original(self, step, snapshot)

    monkeypatch.setattr(hooks.HookRunner, "maybe_run", crash)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    run = run_dir_of(tmp_path, variant, 0)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 32
    assert not (run / "done.json").exists()
    monkeypatch.setattr(hooks.HookRunner, "maybe_run", original)
    capsys.readouterr()
    metrics = train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    assert "resuming" in capsys.readouterr().out
    assert metrics["steps"] == 64
    steps = [float(line.split(",")[0]) for line in (run / "curve.csv").read_text().strip().splitlines()[1:]]
    assert steps == [32.0, 64.0]


def test_table_writer(finished, tmp_path):
    from baselines.report import write_report

    out, _ = finished
    refs = {"bc": {k: 0.5 for k in ("epdms", "pdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec")}}
    paths = write_report(out, list(VARIANTS), [0], refs, {"preset": "test"})
    for kind in ("md", "csv", "json", "png"):
        assert paths[kind].is_file() and paths[kind].stat().st_size > 0
    text = paths["md"].read_text()
    for variant in VARIANTS:
        assert f"| {variant} |" in text
    assert "ppo-vla-rwm vs BC alone" in text and "learned vs rule-based reward" in text
    rows = json.loads(paths["json"].read_text())["rows"]
    assert [r["agent"] for r in rows] == [*VARIANTS, "bc"]
    assert rows[0]["seeds"] == 1 and 0 <= rows[0]["epdms"] <= 1
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert {"epdms", "epdms_std", "ttc", "ep", "ms_per_step", "env_ms_per_step"} <= set(header)
