"""The main job, ``irlvla pipeline``: the whole IRL-VLA recipe on the embedded default, in one run directory.

Stages (each resumable; a finished stage leaves ``stages/<name>.json`` and is skipped on a rerun, and the tools a
stage calls resume their own interrupted work):

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

The run directory ends with ``summary.md`` (the final table) and ``summary.json``. ``--preset quick`` (default)
finishes in about 15 minutes on a 2-core CPU; ``--preset full`` uses the full splits and the budgets of the shipped
checkpoints (hours).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SPLITS = ("synthetic-train", "synthetic-val", "synthetic-test", "synthetic-hard")


@dataclass(frozen=True)
class Preset:
    """Budgets of one pipeline preset (scene counts are the first N scenes of each split; None = the whole split)."""

    scenes: dict[str, int | None]
    bc_scenes: int
    bc_epochs: int
    bc_val_scenes: int
    bc_score_scenes: int
    rwm_scenes: int
    rwm_epochs: int
    rwm_eval_scenes: int
    ppo_variants: tuple[str, ...]
    ppo_preset: str
    leaderboard_scenes: int
    workers: int = 2
    ppo_overrides: tuple[str, ...] = ()
    """Extra ``irlvla baselines train`` flags (e.g. ``("--timesteps", "64")``) on top of ``ppo_preset``."""


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        scenes={"synthetic-train": 3000, "synthetic-val": 200, "synthetic-test": 100, "synthetic-hard": 100},
        bc_scenes=3000, bc_epochs=12, bc_val_scenes=100, bc_score_scenes=32,
        rwm_scenes=600, rwm_epochs=20, rwm_eval_scenes=100,
        ppo_variants=("ppo-vla-rwm", "ppo-vla-epdms"), ppo_preset="quick", leaderboard_scenes=100,
        ppo_overrides=("--timesteps", "8192")),
    "full": Preset(
        scenes={split: None for split in SPLITS},
        bc_scenes=4000, bc_epochs=16, bc_val_scenes=200, bc_score_scenes=64,
        rwm_scenes=2400, rwm_epochs=20, rwm_eval_scenes=300,
        ppo_variants=("ppo-vla-rwm", "ppo-vla-rwm-bc", "ppo-vla-epdms"), ppo_preset="full",
        leaderboard_scenes=500),
}


@dataclass
class PipelineConfig:
    """Arguments of ``irlvla pipeline`` (one field per CLI flag).

    Attributes:
        out: run directory; every artefact lands below it.
        preset: ``"quick"`` or ``"full"`` (:data:`PRESETS`).
        stages: stage names to run (default: all, in order; a stage needs the ones before it).
        num_renders: synthetic-test scenes drawn to PNG.
        progress: show progress bars.
        seed: seed of every stage.
    """

    out: Path = Path("runs/quick")
    preset: str = "quick"
    stages: tuple[str, ...] | None = None
    num_renders: int = 6
    progress: bool = True
    seed: int = 0
    spec: Preset = field(init=False)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r}: choose from {', '.join(PRESETS)}")
        self.spec = PRESETS[self.preset]
        self.out = Path(self.out)

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


def _cli(argv: list[str]) -> None:
    """Run one ``irlvla`` subcommand in-process; a non-zero exit becomes an exception naming the command."""
    from irlvla_gym.cli import main as cli_main

    print(f"[irlvla pipeline] $ irlvla {' '.join(argv)}", flush=True)
    code = cli_main(argv)
    if code:
        raise RuntimeError(f"`irlvla {' '.join(argv)}` exited with status {code}")


def _flags(cfg: PipelineConfig) -> list[str]:
    return [] if cfg.progress else ["--no-progress"]


def _read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


# ---- stages -----------------------------------------------------------------------------------------------------


def stage_scenes(cfg: PipelineConfig) -> dict:
    """Build one scene store per synthetic split (skipped when a verified store of the right size exists) and draw
    a few synthetic-test scenes."""
    from irlvla_gym.scenes import synthetic
    from irlvla_gym.scenes.render import render_scene
    from irlvla_gym.scenes.store import CorruptStoreError, SceneStore, build_store

    summary: dict[str, Any] = {}
    for split, cap in cfg.spec.scenes.items():
        want = synthetic.split_size(split) if cap is None else min(cap, synthetic.split_size(split))
        path = cfg.store(split)
        try:
            if len(SceneStore(path)) == want:
                summary[split] = {"scenes": want, "path": str(path), "status": "present"}
                continue
        except (CorruptStoreError, FileNotFoundError):
            pass  # absent or damaged: (re)build; finished shards of an interrupted build are reused
        t = time.perf_counter()
        report = build_store(synthetic.iter_scenes(split, num=want), path, split=split, source="synthetic",
                             total=want, progress=cfg.progress)
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
    s = cfg.spec
    _cli(["bc", "--out", str(cfg.bc_dir), "--scenes", str(cfg.store("synthetic-train")),
          "--num-scenes", str(s.bc_scenes), "--val-scenes", str(cfg.store("synthetic-val")),
          "--num-val-scenes", str(s.bc_val_scenes), "--val-score-scenes", str(s.bc_score_scenes),
          "--epochs", str(s.bc_epochs), "--seed", str(cfg.seed), *_flags(cfg)])
    metrics = cfg.bc_dir / "bc_metrics.json"
    return {"checkpoint": str(cfg.bc_dir), "metrics": _read_json(metrics) if metrics.is_file() else None}


def stage_rwm_data(cfg: PipelineConfig) -> dict:
    """Stage 2 data: K candidates per training scene, incl. samples of the stage-1 policy, labelled by the scorer."""
    out = cfg.rwm_dir / "data"
    _cli(["rwm", "dataset", "--split", str(cfg.store("synthetic-train")), "--out", str(out),
          "--num-scenes", str(cfg.spec.rwm_scenes), "--policy", str(cfg.bc_dir), "--workers", str(cfg.spec.workers),
          "--seed", str(cfg.seed), *_flags(cfg)])
    return {"dataset": str(out), "scenes": cfg.spec.rwm_scenes}


def stage_rwm(cfg: PipelineConfig) -> dict:
    """Stage 2: train the reward world model (supervised + MaxEnt IRL) and evaluate it on held-out test scenes."""
    ckpt, report = cfg.rwm_dir / "ckpt", cfg.rwm_dir / "eval"
    _cli(["rwm", "train", "--data", str(cfg.rwm_dir / "data"), "--out", str(ckpt),
          "--epochs", str(cfg.spec.rwm_epochs), "--seed", str(cfg.seed), *_flags(cfg)])
    _cli(["rwm", "eval", "--ckpt", str(ckpt), "--split", str(cfg.store("synthetic-test")), "--out", str(report),
          "--num-scenes", str(cfg.spec.rwm_eval_scenes), "--workers", str(cfg.spec.workers),
          "--seed", str(cfg.seed), *_flags(cfg)])
    rep = _read_json(report / "report.json")
    return {"checkpoint": str(ckpt), "report_dir": str(report),
            "report": {"spearman": rep["spearman"], "pearson": rep["pearson"],
                       "best_of_k_gap": rep["best_of_k"]["gap"], "rwm_pick": rep["best_of_k"]["rwm_pick"],
                       "oracle_pick": rep["best_of_k"]["oracle_pick"], "expert": rep["best_of_k"]["expert"]}}


def stage_ppo(cfg: PipelineConfig) -> dict:
    """Stage 3: PPO from the stage-1 policy against the stage-2 reward (and against the rule-based scorer)."""
    runs = {}
    for variant in cfg.spec.ppo_variants:
        overrides = ["--set", f"pretrained={cfg.bc_dir}"]
        if "rwm" in variant:
            overrides += ["--set", f"reward=rwm:{cfg.rwm_dir / 'ckpt'}"]
        _cli(["baselines", "train", variant, "--preset", cfg.spec.ppo_preset, "--seed", str(cfg.seed),
              "--out", str(cfg.ppo_dir), "--no-eval", *overrides, *cfg.spec.ppo_overrides, *_flags(cfg)])
        runs[variant] = str(cfg.ppo_dir / variant / f"seed{cfg.seed}")
    from baselines.report import plot_curves

    curves = plot_curves(cfg.ppo_dir, list(cfg.spec.ppo_variants), [cfg.seed], cfg.out / "learning_curves.png")
    return {"runs": runs, "learning_curves": str(curves) if curves else None}


AGENT_LABELS = {"ppo-vla-rwm": "IRL-VLA (BC + PPO on the RWM)", "ppo-vla-rwm-bc": "IRL-VLA + BC term",
                "ppo-vla-epdms": "BC + PPO on the rule-based scorer"}


def stage_leaderboard(cfg: PipelineConfig) -> dict:
    """All agents on synthetic-test with the rule-based scorer (NAVSIM v2 protocol: EP by PDM-Closed, filter on)."""
    from baselines.evaluate import VLANetworkAgent, load_run_agent
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    agents: list[Any] = ["human", "constant-velocity", "pdm-closed",
                         VLANetworkAgent(str(cfg.bc_dir), "BC (stage 1)")]
    for variant in cfg.spec.ppo_variants:
        agents.append(load_run_agent(cfg.ppo_dir / variant / f"seed{cfg.seed}", AGENT_LABELS.get(variant, variant)))
    result = run_leaderboard(LeaderboardConfig(
        split=str(cfg.store("synthetic-test")), agents=agents, num_scenes=cfg.spec.leaderboard_scenes,
        workers=cfg.spec.workers, seed=cfg.seed, out=cfg.out / "leaderboard", progress=cfg.progress))
    return {"rows": result.rows, "out": str(cfg.out / "leaderboard")}


STAGES: list[tuple[str, Callable[[PipelineConfig], dict]]] = [
    ("scenes", stage_scenes),
    ("bc", stage_bc),
    ("rwm_data", stage_rwm_data),
    ("rwm", stage_rwm),
    ("ppo", stage_ppo),
    ("leaderboard", stage_leaderboard),
]
STAGE_NAMES = tuple(name for name, _ in STAGES)


# ---- driver -----------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ("epdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc")


def summary_markdown(cfg: PipelineConfig, summary: dict) -> str:
    """The final table: every agent's EPDMS and sub-scores on synthetic-test, plus the stage timings."""
    lines = [f"# irlvla pipeline ({cfg.preset} preset)", ""]
    board = summary.get("leaderboard", {}).get("result", {}).get("rows")
    if board:
        lines += [f"Rule-based EPDMS on the first {cfg.spec.leaderboard_scenes} synthetic-test scenes (x100):", "",
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


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run the selected stages in order, skipping finished ones; writes ``summary.json`` and ``summary.md``."""
    from irlvla_gym.utils import atomic_write

    cfg.out.mkdir(parents=True, exist_ok=True)
    selected = cfg.stages or STAGE_NAMES
    unknown = sorted(set(selected) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"--stages {unknown}: unknown stage(s); choose from {', '.join(STAGE_NAMES)}")
    preset_file = cfg.out / "preset.json"
    if preset_file.is_file() and _read_json(preset_file).get("preset") != cfg.preset:
        raise ValueError(f"{cfg.out} holds a run of preset {_read_json(preset_file)['preset']!r}; use another --out")
    with atomic_write(preset_file, "w") as fh:
        json.dump({"preset": cfg.preset, "seed": cfg.seed}, fh)

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
        t = time.perf_counter()
        result = stage(cfg)
        summary[name] = {"result": result, "seconds": round(time.perf_counter() - t, 1)}
        with atomic_write(marker, "w") as fh:  # written last: an interrupted stage is simply run again
            json.dump(summary[name], fh, indent=2, default=str)
    with atomic_write(cfg.out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    with atomic_write(cfg.out / "summary.md", "w") as fh:
        fh.write(summary_markdown(cfg, summary))
    return summary


def _main(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(out=Path(args.out or f"runs/{args.preset}"), preset=args.preset,
                         stages=tuple(args.stages) if args.stages else None, num_renders=args.renders,
                         progress=not args.no_progress, seed=args.seed)
    summary = run_pipeline(cfg)
    print()
    print(summary_markdown(cfg, summary))
    print(f"run directory: {cfg.out}  (summary.md, leaderboard/, learning_curves.png, renders/)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="the whole IRL-VLA recipe on the embedded default (resumable)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="budgets (default: quick)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset>)")
    p.add_argument("--stages", nargs="+", choices=STAGE_NAMES, help="run only these stages (default: all)")
    p.add_argument("--renders", type=int, default=6, help="scenes drawn to PNG (default: 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)
