"""``irlvla baselines interpolate``: finished fine-tuned runs mixed back towards their starting network in weight
space (WiSE-FT; :mod:`irlvla_gym.policies.interpolate`), written as new runs that ``irlvla baselines compare`` and
the leaderboard treat like any other.

::

    irlvla baselines interpolate ppo-vla-rwm-greedy --out runs/paper --alphas 0.25 0.5 0.75
    irlvla baselines compare --out runs/paper --variants ppo-vla-rwm-greedy-wise50 ...

For each finished run ``<out>/<variant>/seed<k>/`` (a VLA ``network/``) and each ``alpha``, the run
``<out>/<variant>-wise<100 alpha>/seed<k>/`` gets ``network/`` = ``(1 - alpha) * base + alpha * tuned``, where base is
the checkpoint the run started from (its config's ``pretrained``, e.g. ``bc_default``; ``--base`` overrides), a
``config.json`` = the source's with the new variant name and an ``interpolation`` record (alpha, base, source run,
SHA-256 of both weight files), and a ``done.json`` = the source's (the mix costs about a second: the training wall
time is the source's). A rerun skips runs whose record matches and refuses to overwrite one that does not.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irlvla_gym.configs import option


@dataclass
class InterpolateJob:
    """``irlvla baselines interpolate``: WiSE-FT runs from finished runs (:func:`run_interpolate`)."""

    variant: str = option(positional=True, help="the fine-tuned variant (<out>/<variant>/seed<k>/ with a network/)")
    out: str = "runs/baselines"
    """output root holding the runs; the new runs go beside them"""
    alphas: tuple[float, ...] = (0.5,)
    """weights of the fine-tuned network, each in [0, 1] (0 = the base network, 1 = the run itself)"""
    seeds: tuple[int, ...] = ()
    """seeds to mix (default: every finished seed of the variant)"""
    base: str | None = None
    """the base network, a checkpoint directory or shipped name (default: each run's config 'pretrained')"""
    name: str = "{variant}-wise{percent}"
    """name of the new variants ({variant}, {percent} = 100 alpha, {alpha})"""


def variant_name(template: str, variant: str, alpha: float) -> str:
    """The new variant's name: ``template`` with ``{variant}``, ``{percent}`` (``50``, ``12.5``) and ``{alpha}``."""
    percent = f"{100 * alpha:g}"
    try:
        name = template.format(variant=variant, percent=percent, alpha=f"{alpha:g}")
    except (KeyError, IndexError) as exc:
        raise ValueError(f"--name {template!r}: unknown field {exc} (use {{variant}}, {{percent}}, {{alpha}})") from exc
    if not name or "/" in name or name == variant:
        raise ValueError(f"--name {template!r} gives {name!r}: need a new directory name without '/'")
    return name


def _base_of(run_dir: Path, override: str | None) -> str:
    """The base network of a run: ``override``, else the run's config ``pretrained`` (a VLA run started from it)."""
    from baselines.common import read_json

    if override:
        return override
    pretrained = read_json(run_dir / "config.json").get("pretrained")
    if not pretrained:
        raise ValueError(f"{run_dir / 'config.json'}: no 'pretrained' entry (the network the run started from); "
                         f"pass --base")
    return str(pretrained)


def interpolate_run(run_dir: Path, dest: Path, alpha: float, base: str, new_variant: str) -> bool:
    """Write one interpolated run ``dest`` from the finished run ``run_dir``; False if an identical one exists.

    Raises FileExistsError if ``dest`` holds a different run (another alpha, base or source)."""
    from baselines.common import read_json, write_json
    from irlvla_gym.agents import file_sha256
    from irlvla_gym.policies.interpolate import check_alpha, save_interpolated
    from irlvla_gym.policies.network import resolve_checkpoint

    alpha = check_alpha(alpha)
    tuned = run_dir / "network"
    if not (tuned / "config.json").is_file():
        raise ValueError(f"{run_dir}: no VLA network/ (only VLA runs can be interpolated)")
    base_dir = resolve_checkpoint(base)
    record = {"alpha": alpha, "base": base, "source_run": str(run_dir.resolve()),
              "base_sha256": file_sha256(base_dir / "model.safetensors"),
              "source_sha256": file_sha256(tuned / "model.safetensors")}
    if (dest / "done.json").is_file():
        if read_json(dest / "config.json").get("interpolation") == record:
            return False
        raise FileExistsError(f"{dest} holds another run (a different alpha, base or source): remove it or pick "
                              f"another --name")
    if dest.exists():  # an interrupted mix (no done.json) is redone; anything else there is not ours to delete
        ours = all(p.name in ("network", "config.json") for p in dest.iterdir()) and (
            not (dest / "config.json").is_file() or "interpolation" in read_json(dest / "config.json"))
        if not ours:
            raise FileExistsError(f"{dest} exists and is not an interpolated run (e.g. a training run in progress): "
                                  f"pick another --name")
        shutil.rmtree(dest)
    save_interpolated(base_dir, tuned, alpha, dest / "network", record={"source_run": record["source_run"]})
    cfg = read_json(run_dir / "config.json")
    cfg.update(variant=new_variant, interpolation=record,
               description=f"{cfg.get('description', cfg.get('variant'))}; weights mixed with {base} at alpha "
                           f"{alpha:g} (WiSE-FT)")
    write_json(dest / "config.json", cfg)
    write_json(dest / "done.json", {**read_json(run_dir / "done.json"), "interpolated_from": record["source_run"]})
    return True


def run_interpolate(job: InterpolateJob) -> dict[str, Any]:
    """Every (alpha, seed) run of ``job``; returns ``{"written": [...], "skipped": [...]}`` (run directories)."""
    from baselines.protocol import find_runs

    alphas = [float(a) for a in job.alphas]
    if not alphas:
        raise ValueError("--alphas: give at least one value in [0, 1]")
    runs = find_runs(job.out, (job.variant,), job.seeds)[job.variant]
    written, skipped = [], []
    for alpha in alphas:
        new_variant = variant_name(job.name, job.variant, alpha)
        for seed, run_dir in sorted(runs.items()):
            dest = Path(job.out) / new_variant / f"seed{seed}"
            changed = interpolate_run(run_dir, dest, alpha, _base_of(run_dir, job.base), new_variant)
            (written if changed else skipped).append(dest)
            print(f"[interpolate] {dest}: {'written' if changed else 'up to date'} (alpha {alpha:g})")
    return {"written": written, "skipped": skipped}


__all__ = ["InterpolateJob", "interpolate_run", "run_interpolate", "variant_name"]
