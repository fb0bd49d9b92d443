"""The main job, ``irlvla pipeline``: the whole IRL-VLA recipe on the embedded default, in one run directory.

Stages (each resumable; a finished stage leaves ``stages/<name>.json`` and is skipped on a rerun, and the tools a
stage calls resume their own interrupted work). ``preset.json`` records the run's config (preset, seed, renders,
budgets); a rerun with another one is an error naming the field, never a silent mix of two runs:

1. ``scenes``      synthetic scene stores (train / val / test / hard) and a few scene pictures;
2. ``bc``          stage 1: imitation pretraining of the VLA policy on expert plans (``irlvla bc``);
3. ``rwm_data``    stage 2 data: candidate plans (vocabulary, expert perturbations, samples of the stage-1 policy)
                   labelled with every EPDMS sub-score by the rule-based scorer (``irlvla rwm dataset``);
4. ``rwm``         stage 2: the reward world model, supervised + maximum-entropy IRL (``irlvla rwm train``), and its
                   evaluation on held-out scenes (``irlvla rwm eval``);
5. ``ppo``         stage 3: PPO fine-tuning of the stage-1 VLA against the stage-2 reward (IRL-VLA), beside the
                   same PPO against the rule-based scorer (the simulator-reward reference) (``irlvla baselines``);
6. ``leaderboard`` every agent on synthetic-test with the rule-based EPDMS scorer, beside the non-learning
                   references (logged human, constant velocity, PDM-Closed) (``irlvla leaderboard``).

Each stage calls the typed entry point of its tool with a config object (``train_bc(BCConfig)``,
``run_dataset(DatasetConfig)``, ``run_train(TrainRunConfig)``, ``run_eval(EvalConfig)``, ``train_run(RunConfig)``,
``run_leaderboard(LeaderboardConfig)``), the same ones its command runs.

The run directory ends with ``summary.md`` (the final table) and ``summary.json``. ``--backend ray`` runs the RWM
dataset build, the PPO rollouts (the envs on ``workers`` Ray actors, ``irlvla_gym.envs.ray_vector``) and the
leaderboard on Ray: the cluster of ``$RAY_ADDRESS`` (``ray start``), else a local Ray instance; same numbers as
``local``. ``--preset quick`` (default) finishes in about 4 minutes on an idle 2-core CPU; ``--preset full`` uses the full
splits and the budgets of the shipped checkpoints (hours).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from irlvla_gym.configs import Presets, add_arguments, from_args, option
from irlvla_gym.rewards import RewardSpec

SPLITS = ("synthetic-train", "synthetic-val", "synthetic-test", "synthetic-hard")
STAGE_NAMES = ("scenes", "bc", "rwm_data", "rwm", "ppo", "leaderboard")
"""The stages, in order (module docs); :data:`STAGES` maps them to their functions."""


@dataclass(frozen=True)
class Budgets:
    """Budgets of one pipeline preset (the defaults are those of ``quick``; scene counts are the first N scenes)."""

    scenes: Mapping[str, int | None] = field(default_factory=lambda: {
        "synthetic-train": 3000, "synthetic-val": 200, "synthetic-test": 100, "synthetic-hard": 100})
    """scene-store size per synthetic split (None: the whole split)"""
    bc_scenes: int = 3000
    """stage 1: behaviour-cloning training scenes"""
    bc_epochs: int = 12
    """stage 1: behaviour-cloning epochs"""
    bc_val_scenes: int = 100
    """stage 1: validation scenes (ADE / FDE)"""
    bc_score_scenes: int = 32
    """stage 1: validation scenes scored with EPDMS"""
    rwm_scenes: int = 600
    """stage 2: training scenes of the RWM dataset"""
    rwm_epochs: int = 20
    """stage 2: RWM training epochs"""
    rwm_eval_scenes: int = 100
    """stage 2: held-out synthetic-test scenes of the RWM report"""
    ppo_variants: tuple[str, ...] = ("ppo-vla-rwm", "ppo-vla-epdms")
    """stage 3: baselines variants trained from the stage-1 policy; a learned-reward variant uses the stage-2 RWM, as
    the PPO reward and, for ``ppo-vla-rwm-greedy``, as the teacher of its distillation. Not the default: the quick
    stage-2 model (600 scenes, 8 policy samples each) is no teacher for it yet (its distilled policy gave up history
    comfort in a trial run); the recipe's teacher ``smooth`` was trained with 24 smooth samples per scene"""
    ppo_preset: str = "quick"
    """stage 3: preset of the variants' yaml configs"""
    ppo_overrides: Mapping[str, Any] = field(default_factory=dict)
    """stage 3: run-config overrides on top of ppo_preset (as irlvla baselines --set), e.g. {"total_timesteps": 64}"""
    leaderboard_scenes: int = 100
    """synthetic-test scenes of the final leaderboard"""
    workers: int = 2
    """processes of the RWM dataset builds and the leaderboard"""


PRESETS = Presets("irlvla pipeline", {
    "quick": {"ppo_overrides": {"total_timesteps": 8192}},  # the Budgets defaults; PPO at twice the yaml quick budget
    "full": {"scenes": {split: None for split in SPLITS}, "bc_scenes": 4000, "bc_epochs": 16, "bc_val_scenes": 200,
             "bc_score_scenes": 64, "rwm_scenes": 2400, "rwm_eval_scenes": 300,
             "ppo_variants": ("ppo-vla-rwm", "ppo-vla-rwm-bc", "ppo-vla-epdms"), "ppo_preset": "full",
             "leaderboard_scenes": 500},
})
"""Named budgets (:class:`irlvla_gym.configs.Presets` over :class:`Budgets`): ``--preset quick`` finishes in about
4 minutes on an idle 2-core CPU, ``full`` uses the full splits and the budgets of the shipped checkpoints (hours)."""


@dataclass
class PipelineConfig:
    """Arguments of ``irlvla pipeline`` (each field is the flag of the same name)."""

    preset: str = option("quick", choices=tuple(PRESETS))
    """budgets: quick (about 4 minutes on an idle 2-core CPU) or full (hours); PRESETS"""
    out: Path | None = None
    """run directory; every artefact lands below it (default: runs/<preset>)"""
    stages: tuple[str, ...] | None = option(None, choices=STAGE_NAMES)
    """run only these stages (default: all, in order; a stage needs the ones before it)"""
    num_renders: int = option(6, flag="--renders")
    """synthetic-test scenes drawn to PNG"""
    seed: int = 0
    """seed of every stage"""
    backend: str = option("local", choices=("local", "ray"))
    """local processes, or Ray (the RWM dataset, the PPO rollouts on `workers` actors, the leaderboard) on the cluster
    of $RAY_ADDRESS or a local Ray instance; not part of the run's config (same numbers)"""
    progress: bool = True
    """progress bars"""
    budgets: Budgets = field(init=False)
    """the preset's budgets"""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r}: choose from {', '.join(PRESETS)}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"--backend {self.backend!r}: choose from local, ray")
        self.budgets = PRESETS.apply(Budgets(), self.preset)
        self.out = Path(self.out) if self.out else Path("runs") / self.preset

    # Paths of the stages' artefacts.
    def store(self, split: str) -> Path:
        return self.out / "scenes" / split

    @property
    def bc_dir(self) -> Path:
        return self.out / "bc"

    @property
    def rwm_dir(self) -> Path:
        return self.out / "rwm"

    @property
    def ppo_dir(self) -> Path:
        return self.out / "ppo"


def _call(stage: Callable[[Any], Any], config: Any) -> Any:
    """Run one typed stage entry point (``stage(config)``), logging what it gets."""
    print(f"[irlvla pipeline] {stage.__module__}.{stage.__name__}({config!r})", flush=True)
    return stage(config)


def _read_json(path: Path) -> Any:
    from irlvla_gym.utils import read_json

    return read_json(path)


# ---- stages -----------------------------------------------------------------------------------------------------


def stage_scenes(cfg: PipelineConfig) -> dict:
    """Build one scene store per synthetic split (skipped when a verified store of the right size exists) and draw
    a few synthetic-test scenes."""
    from irlvla_gym.scenes import synthetic
    from irlvla_gym.scenes.render import render_scene
    from irlvla_gym.scenes.store import CorruptStoreError, SceneStore, build_store

    summary: dict[str, Any] = {}
    for split, cap in cfg.budgets.scenes.items():
        want = synthetic.split_size(split) if cap is None else min(cap, synthetic.split_size(split))
        path = cfg.store(split)
        try:
            if len(SceneStore(path)) == want:
                summary[split] = {"scenes": want, "path": str(path), "status": "present"}
                continue
        except (CorruptStoreError, FileNotFoundError):
            pass  # absent or damaged: (re)build; finished shards of an interrupted build are reused
        t = time.perf_counter()
        # scenes depend only on their seeds: generated in `workers` processes, written in order (same store)
        report = build_store(synthetic.iter_scenes(split, num=want, workers=cfg.budgets.workers), path, split=split,
                             source="synthetic", total=want, progress=cfg.progress)
        summary[split] = {"scenes": report.count, "skipped": len(report.skipped), "path": str(path),
                          "seconds": round(time.perf_counter() - t, 1), "status": "built"}
    store = SceneStore(cfg.store("synthetic-test"))
    renders = []
    for i in range(min(cfg.num_renders, len(store))):
        scene = store[i]
        path = cfg.out / "renders" / f"{scene.token}.png"
        render_scene(scene, path)
        renders.append(str(path))
    summary["renders"] = renders
    return summary


def stage_bc(cfg: PipelineConfig) -> dict:
    """Stage 1: behaviour cloning of the VLA (camera + instruction + command + ego -> 8-pose plan)."""
    from irlvla_gym.policies.bc import BCConfig, train_bc

    b = cfg.budgets
    _call(train_bc, BCConfig(
        out=str(cfg.bc_dir), scenes=str(cfg.store("synthetic-train")), num_scenes=b.bc_scenes,
        val_scenes=str(cfg.store("synthetic-val")), num_val_scenes=b.bc_val_scenes, val_score_scenes=b.bc_score_scenes,
        epochs=b.bc_epochs, seed=cfg.seed, progress=cfg.progress))
    metrics = cfg.bc_dir / "bc_metrics.json"
    return {"checkpoint": str(cfg.bc_dir), "metrics": _read_json(metrics) if metrics.is_file() else None}


def stage_rwm_data(cfg: PipelineConfig) -> dict:
    """Stage 2 data: K candidates per training scene, incl. samples of the stage-1 policy, labelled by the scorer."""
    from reward_models.dataset import DatasetConfig, run_dataset

    out = cfg.rwm_dir / "data"
    _call(run_dataset, DatasetConfig(out=str(out), split=str(cfg.store("synthetic-train")),
                                     num_scenes=cfg.budgets.rwm_scenes, policy=str(cfg.bc_dir),
                                     backend=cfg.backend, workers=cfg.budgets.workers, seed=cfg.seed,
                                     progress=cfg.progress))
    return {"dataset": str(out), "scenes": cfg.budgets.rwm_scenes}


def stage_rwm(cfg: PipelineConfig) -> dict:
    """Stage 2: train the reward world model (supervised + MaxEnt IRL) and evaluate it on held-out test scenes."""
    from reward_models.evaluate import EvalConfig, run_eval
    from reward_models.train import TrainConfig, TrainRunConfig, run_train

    ckpt, report = cfg.rwm_dir / "ckpt", cfg.rwm_dir / "eval"
    _call(run_train, TrainRunConfig(data=str(cfg.rwm_dir / "data"), out=str(ckpt), progress=cfg.progress,
                                    train=TrainConfig(epochs=cfg.budgets.rwm_epochs, seed=cfg.seed)))
    rep = _call(run_eval, EvalConfig(ckpt=str(ckpt), out=str(report), split=str(cfg.store("synthetic-test")),
                                     num_scenes=cfg.budgets.rwm_eval_scenes, workers=cfg.budgets.workers,
                                     seed=cfg.seed, progress=cfg.progress))
    return {"checkpoint": str(ckpt), "report_dir": str(report),
            "report": {"spearman": rep["spearman"], "pearson": rep["pearson"],
                       "best_of_k_gap": rep["best_of_k"]["gap"], "rwm_pick": rep["best_of_k"]["rwm_pick"],
                       "oracle_pick": rep["best_of_k"]["oracle_pick"], "expert": rep["best_of_k"]["expert"]}}


def ppo_run_configs(cfg: PipelineConfig) -> list[Any]:
    """The run configs of stage 3, one per ``ppo_variants`` entry: the variant's yaml at ``ppo_preset``, started from
    the stage-1 policy; a learned-reward variant is rewarded by the stage-2 model, which also picks the targets of
    its reward-greedy distillation (unless the variant names the rule-based scorer as the teacher); then
    ``ppo_overrides``."""
    from baselines.config import load_config

    b = cfg.budgets
    stage2 = RewardSpec("rwm", str(cfg.rwm_dir / "ckpt"))  # the model this run trained, not the shipped one
    configs = []
    for variant in b.ppo_variants:
        overrides: list[Mapping[str, Any]] = [{"pretrained": str(cfg.bc_dir)}]
        plain = load_config(variant, b.ppo_preset)
        if plain.learned_reward:
            overrides.append({"reward": str(stage2)})
            if plain.distill.epochs and plain.distill.reward != "epdms":
                overrides.append({"distill": {"reward": stage2.argument}})
        configs.append(load_config(variant, b.ppo_preset, [*overrides, b.ppo_overrides]))
    return configs


def stage_ppo(cfg: PipelineConfig) -> dict:
    """Stage 3: PPO from the stage-1 policy against the stage-2 reward (and against the rule-based scorer)."""
    from baselines.common import run_dir_of
    from baselines.report import plot_curves
    from baselines.runner import train_run

    b = cfg.budgets
    configs = ppo_run_configs(cfg)
    runs = {}
    for variant, run_cfg in zip(b.ppo_variants, configs):
        print(f"[irlvla pipeline] baselines.runner.train_run({run_cfg!r}, seed={cfg.seed}, out={cfg.ppo_dir})",
              flush=True)
        runs[variant] = str(run_dir_of(cfg.ppo_dir, variant, cfg.seed))
    parallel = min(b.workers, len(configs)) if cfg.backend == "local" else 1
    if parallel > 1:
        # the variants are independent runs (one torch thread each): one process per variant, same numbers as
        # running them one after the other; the Ray backend already spreads each run's envs over the workers
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from irlvla_gym.utils import limit_torch_threads

        with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn"), initializer=limit_torch_threads) as pool:
            jobs = [pool.submit(train_run, c, cfg.seed, cfg.ppo_dir, False, False) for c in configs]
            for job in jobs:
                job.result()
    else:
        for run_cfg in configs:
            train_run(run_cfg, cfg.seed, cfg.ppo_dir, cfg.progress, evaluate=False)
    curves = plot_curves(cfg.ppo_dir, list(b.ppo_variants), [cfg.seed], cfg.out / "learning_curves.png")
    return {"runs": runs, "learning_curves": str(curves) if curves else None}


AGENT_LABELS = {"ppo-vla-rwm-greedy": "IRL-VLA (BC + RWM-greedy distillation + PPO on the RWM)",
                "ppo-vla-rwm": "BC + PPO on the RWM", "ppo-vla-rwm-bc": "BC + PPO on the RWM + BC term",
                "ppo-vla-epdms": "BC + PPO on the rule-based scorer"}


def stage_leaderboard(cfg: PipelineConfig) -> dict:
    """All agents on synthetic-test with the rule-based scorer (NAVSIM v2 protocol: EP by PDM-Closed, filter on)."""
    from baselines.evaluate import VLANetworkAgent, load_run_agent
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    agents: list[Any] = ["human", "stand-still", "constant-velocity", "pdm-closed",
                         VLANetworkAgent(str(cfg.bc_dir), "BC (stage 1)")]
    for variant in cfg.budgets.ppo_variants:
        agents.append(load_run_agent(cfg.ppo_dir / variant / f"seed{cfg.seed}", AGENT_LABELS.get(variant, variant)))
    result = run_leaderboard(LeaderboardConfig(
        split=str(cfg.store("synthetic-test")), agents=agents, num_scenes=cfg.budgets.leaderboard_scenes,
        backend=cfg.backend, workers=cfg.budgets.workers, seed=cfg.seed, out=cfg.out / "leaderboard",
        progress=cfg.progress))
    return {"rows": result.rows, "out": str(cfg.out / "leaderboard")}


STAGES: list[tuple[str, Callable[[PipelineConfig], dict]]] = [
    ("scenes", stage_scenes),
    ("bc", stage_bc),
    ("rwm_data", stage_rwm_data),
    ("rwm", stage_rwm),
    ("ppo", stage_ppo),
    ("leaderboard", stage_leaderboard),
]
assert tuple(name for name, _ in STAGES) == STAGE_NAMES


# ---- driver -----------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ("epdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc")


def summary_markdown(cfg: PipelineConfig, summary: dict) -> str:
    """The final table: every agent's EPDMS and sub-scores on synthetic-test, plus the stage timings."""
    lines = [f"# irlvla pipeline ({cfg.preset} preset)", ""]
    board = summary.get("leaderboard", {}).get("result", {}).get("rows")
    if board:
        lines += [f"Rule-based EPDMS on the first {cfg.budgets.leaderboard_scenes} synthetic-test scenes (x100):", "",
                  "| agent | " + " | ".join(c.upper() for c in SUMMARY_COLUMNS) + " |",
                  "|---|" + "---:|" * len(SUMMARY_COLUMNS)]
        for row in board:
            cells = [f"{100 * float(row[c]):.1f}" if row.get(c) is not None else "-" for c in SUMMARY_COLUMNS]
            lines.append(f"| {row['agent']} | " + " | ".join(cells) + " |")
        lines.append("")
    rwm = summary.get("rwm", {}).get("result", {}).get("report")
    if isinstance(rwm, dict):
        keys = [k for k in ("spearman", "pearson", "best_of_k_gap", "rwm_pick", "oracle_pick") if k in rwm]
        if keys:
            lines += ["Reward world model on held-out scenes: "
                      + ", ".join(f"{k} {float(rwm[k]):.3f}" for k in keys), ""]
    lines += ["| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {summary[name]['seconds']:.0f} |" for name in STAGE_NAMES if name in summary]
    return "\n".join(lines) + "\n"


def run_config_record(cfg: PipelineConfig) -> dict[str, Any]:
    """What makes two pipeline runs the same (``preset.json``): preset, seed, renders and the budgets (scene
    counts = the data), as JSON reads them back; not ``out`` / ``stages`` / ``progress``, which change nothing."""
    import dataclasses

    record = {"preset": cfg.preset, "seed": cfg.seed, "num_renders": cfg.num_renders,
              "budgets": dataclasses.asdict(cfg.budgets)}
    return json.loads(json.dumps(record, default=str))


def check_run_config(cfg: PipelineConfig) -> None:
    """Record the run's config in ``out/preset.json``, or refuse a rerun whose config differs from the recorded
    one (ValueError naming the fields). Files of older versions hold only preset and seed: those are compared."""
    from irlvla_gym.utils import atomic_write, json_differences

    path, record = cfg.out / "preset.json", run_config_record(cfg)
    if path.is_file():
        old = _read_json(path)
        diff = json_differences(old, {k: v for k, v in record.items() if k in old})
        if diff:
            raise ValueError(f"{cfg.out} holds a pipeline run with a different config: {'; '.join(diff)}; use "
                             f"another --out")
        if set(old) >= set(record):
            return
    with atomic_write(path, "w") as fh:  # first run, or an older file completed with the fields it lacked
        json.dump(record, fh, indent=2)


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run the selected stages in order, skipping finished ones; writes ``summary.json`` and ``summary.md``."""
    from irlvla_gym.utils import atomic_write

    cfg.out.mkdir(parents=True, exist_ok=True)
    selected = cfg.stages or STAGE_NAMES
    unknown = sorted(set(selected) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"--stages {unknown}: unknown stage(s); choose from {', '.join(STAGE_NAMES)}")
    check_run_config(cfg)
    started_ray = use_backend(cfg)
    try:
        summary = run_stages(cfg, selected)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    with atomic_write(cfg.out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    with atomic_write(cfg.out / "summary.md", "w") as fh:
        fh.write(summary_markdown(cfg, summary))
    return summary


def use_backend(cfg: PipelineConfig) -> bool:
    """``--backend ray``: connect to Ray once (``$RAY_ADDRESS`` or a local instance of ``workers`` CPUs, which the
    Ray stages then share) and route the PPO envs to ``workers`` Ray actors. True when this started Ray."""
    if cfg.backend != "ray":
        return False
    from baselines.cli import ScaleOptions, apply_scale_options
    from irlvla_gym.envs.ray_vector import connect_ray

    apply_scale_options(ScaleOptions("ray", cfg.budgets.workers))
    return connect_ray(num_cpus=cfg.budgets.workers)


def run_stages(cfg: PipelineConfig, selected: tuple[str, ...]) -> dict[str, Any]:
    """Run the ``selected`` stages in order, skipping finished ones (their markers); the summary so far."""
    from irlvla_gym.utils import atomic_write, limit_torch_threads

    summary: dict[str, Any] = {}
    for index, (name, stage) in enumerate(STAGES, 1):
        marker = cfg.out / "stages" / f"{name}.json"
        if marker.is_file():
            summary[name] = _read_json(marker)
            print(f"[irlvla pipeline] {index}/{len(STAGES)} {name}: done earlier, skipped", flush=True)
            continue
        if name not in selected:
            continue
        print(f"[irlvla pipeline] {index}/{len(STAGES)} {name} ...", flush=True)
        limit_torch_threads()  # as `irlvla <command>` does before each tool
        t = time.perf_counter()
        result = stage(cfg)
        summary[name] = {"result": result, "seconds": round(time.perf_counter() - t, 1)}
        with atomic_write(marker, "w") as fh:  # written last: an interrupted stage is simply run again
            json.dump(summary[name], fh, indent=2, default=str)
    return summary


def _main(args: argparse.Namespace) -> int:
    cfg = from_args(PipelineConfig, args)
    summary = run_pipeline(cfg)
    print()
    print(summary_markdown(cfg, summary))
    print(f"run directory: {cfg.out}  (summary.md, leaderboard/, learning_curves.png, renders/)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="the whole IRL-VLA recipe on the embedded default (resumable)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, PipelineConfig)  # one flag per field of the config
    p.set_defaults(func=_main)
