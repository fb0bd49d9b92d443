"""BC runs are rows of the evaluation protocol: ``irlvla bc --out <out>/<variant>/seed<k>`` is found by
``find_runs`` once finished (not while training), loaded as its network and identified by its weights, so policy
ablations (e.g. which observation keys) compare with ``irlvla baselines compare`` like baselines variants."""

from __future__ import annotations

from baselines.evaluate import is_finished_bc_run, load_run_agent
from baselines.protocol import find_runs, run_identity
from irlvla_gym.policies.bc import BCConfig, train_bc


def test_finished_bc_runs_are_protocol_runs(tmp_path):
    run = tmp_path / "runs" / "ego-only" / "seed0"
    cfg = BCConfig(out=str(run), num_scenes=8, num_val_scenes=2, val_score_scenes=1, epochs=1, batch_size=8,
                   obs_keys=("ego", "instruction"), vla_config={"hidden": 16, "fusion_layers": 1, "text_hidden": 16,
                                                                "text_layers": 1},
                   cache_dir=str(tmp_path / "bc-cache"), progress=False)
    train_bc(cfg)
    assert is_finished_bc_run(run)
    assert find_runs(tmp_path / "runs") == {"ego-only": {0: run}}
    agent = load_run_agent(run)
    assert agent.name == "ego-only/seed0"
    assert run_identity(run)["weights"] is not None
    # a run stopped before its last epoch is not a row
    (run / "trainer" / "state.json").write_text((run / "trainer" / "state.json").read_text().replace(
        '"epochs": 1', '"epochs": 3'))
    assert not is_finished_bc_run(run) and find_runs(tmp_path / "runs") == {}
