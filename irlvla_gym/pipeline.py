"""The main job (``irlvla pipeline``): everything that runs out of the box on the embedded default.

Stages run in order and are resumable: a stage whose outputs exist and verify is skipped, so an interrupted run
picks up where it stopped. Today the pipeline builds the synthetic scene stores and renders a few scenes; later
stages (scoring, reward model, imitation, PPO, leaderboard) append themselves to :data:`STAGES`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SPLITS = ("synthetic-train", "synthetic-val", "synthetic-test", "synthetic-hard")


@dataclass
class PipelineConfig:
    """Arguments of ``irlvla pipeline`` (one field per CLI flag).

    Attributes:
        out: output directory (scene stores under ``scenes/``, pictures under ``renders/``).
        max_scenes: cap on scenes per split (None = the full split: 5,000 train, 500 for the others).
        num_renders: how many synthetic-test scenes to draw to PNG.
        progress: show progress bars.
    """

    out: Path = Path("runs/default")
    max_scenes: int | None = None
    num_renders: int = 6
    progress: bool = True


def stage_scenes(cfg: PipelineConfig) -> dict:
    """Build one scene store per synthetic split (skipped when a verified store of the right size exists)."""
    from irlvla_gym.scenes import synthetic
    from irlvla_gym.scenes.store import CorruptStoreError, SceneStore, build_store

    summary = {}
    for split in SPLITS:
        want = synthetic.split_size(split) if cfg.max_scenes is None else min(cfg.max_scenes,
                                                                              synthetic.split_size(split))
        path = cfg.out / "scenes" / split
        try:
            store = SceneStore(path)
            if len(store) == want:
                summary[split] = {"scenes": len(store), "path": str(path), "status": "present"}
                continue
        except (CorruptStoreError, FileNotFoundError):
            pass  # absent or damaged: (re)build; finished shards of an interrupted build are reused
        t = time.perf_counter()
        report = build_store(synthetic.iter_scenes(split, num=want), path, split=split, source="synthetic",
                             total=want, progress=cfg.progress)
        summary[split] = {"scenes": report.count, "skipped": len(report.skipped), "path": str(path),
                          "seconds": round(time.perf_counter() - t, 1), "status": "built"}
    return summary


def stage_renders(cfg: PipelineConfig) -> dict:
    """Draw the first few synthetic-test scenes (map, agents, lights, route, expert plan) to PNG."""
    from irlvla_gym.scenes.render import render_scene
    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(cfg.out / "scenes" / "synthetic-test")
    out_dir = cfg.out / "renders"
    paths = []
    for i in range(min(cfg.num_renders, len(store))):
        scene = store[i]
        path = out_dir / f"{scene.token}.png"
        render_scene(scene, path)
        paths.append(str(path))
    return {"renders": paths}


STAGES: list[tuple[str, Callable[[PipelineConfig], dict]]] = [
    ("scenes", stage_scenes),
    ("renders", stage_renders),
]


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run every stage; returns and writes ``summary.json`` in ``cfg.out``."""
    from irlvla_gym.utils import atomic_write

    cfg.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, stage in STAGES:
        print(f"[irlvla pipeline] stage {name} ...", flush=True)
        t = time.perf_counter()
        summary[name] = stage(cfg)
        summary[name]["stage_seconds"] = round(time.perf_counter() - t, 1)
        with atomic_write(cfg.out / "summary.json", "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary


def _main(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(out=Path(args.out), max_scenes=args.max_scenes, num_renders=args.renders,
                         progress=not args.no_progress)
    summary = run_pipeline(cfg)
    for split, info in summary["scenes"].items():
        if isinstance(info, dict):
            print(f"  {split:16s} {info['scenes']:6d} scenes  {info['status']:8s} {info['path']}")
    for path in summary["renders"]["renders"]:
        print(f"  picture: {path}")
    print(f"summary: {cfg.out / 'summary.json'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="run the main job on the embedded default (resumable)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/default", help="output directory (default: runs/default)")
    p.add_argument("--max-scenes", type=int, default=None, help="cap scenes per split (default: full splits)")
    p.add_argument("--renders", type=int, default=6, help="number of scenes drawn to PNG (default: 6)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)
