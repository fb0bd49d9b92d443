"""``irlvla check-scorer --navsim``: a differential check of the project's scorer against the official NAVSIM scorer.

Pipeline (one export per source; sources: synthetic, av2, nuscenes, waymo, av2-forecasting):

1. scenes: ``--scenes N`` synthetic-test scenes balanced over every synthetic layout (:func:`select_synthetic`;
   default 40, >= 5 per layout) and the real sample windows under ``../shared/data`` (AV2 sensor logs, the nuScenes
   and Waymo ScenarioNet samples, the AV2 motion-forecasting scenarios:
   :func:`irlvla_gym.evaluation.real_data.iter_real_scenes`; all windows by default, ``--scenes N`` evenly spaced ones
   per source);
2. export each source with :func:`irlvla_gym.scenes.navsim.export_navsim`;
3. a fixed set of plans per scene (:func:`make_plans`, :data:`PLAN_NAMES`), built on the original scene (the t0 ego
   frame is the same after the export);
4. the project's score (:func:`irlvla_gym.metrics.score_plans`, fast implementation, EP normalised by
   :func:`irlvla_gym.planners.pdm_reference_progress`) on the scenes read back from the export by the project's own
   NAVSIM reader (:func:`irlvla_gym.scenes.navsim.iter_scenes`), human filter on and/or off;
5. NAVSIM's score: ``navsim_side.py`` (a standalone script next to this module) run by the user's NAVSIM interpreter
   in a subprocess, with ``NUPLAN_MAPS_ROOT`` = the export's maps dir; JSON request in, JSON answer out, progress
   lines on stderr;
6. :func:`compare` and :func:`format_report`: per source and filter mode, the share of plans on which the two agree
   (NC, DAC, DDC, TLC, TTC, LK, HC equal; EP and EPDMS within :data:`TOLERANCE`) and the mean |difference|, the raw
   progress and PDM-Closed normaliser differences, then the disagreements.

Agreement is reported, not asserted: the exit code is 0 whenever the comparison ran, and also (status "skipped")
when no NAVSIM interpreter is available. A scene that fails on either side (export, read-back, scoring) is listed
under ``bad scenes`` and left out of the comparison; the run goes on.

EPDMS here is without EC on both sides (one frame, no previous plan): NAVSIM's ``multiplicative_metrics_prod`` x the
weighted mean of EP, TTC, LK, HC.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from irlvla_gym.geometry import wrap_angle
from irlvla_gym.scenes.scene import Scene

SOURCES = ("synthetic", "av2", "nuscenes", "waymo", "av2-forecasting")
"""Every source the export supports: synthetic and each real source of :data:`irlvla_gym.evaluation.real_data.SOURCES`.
:func:`irlvla_gym.scenes.navsim.export_navsim` writes each scene's own map (lanes, boundaries, drivable area,
crosswalks) as a nuPlan GeoPackage, so no source needs a nuPlan map; Waymo (lanes only, drivable area = the lanes'
union) and AV2 motion forecasting (its log map archive) export like the others."""
DEFAULT_SYNTHETIC = 40
SYNTHETIC_SPLIT = "synthetic-test"
MODES = ("on", "off")
"""Human false-positive filter on / off."""
EXACT_METRICS = ("nc", "dac", "ddc", "tlc", "ttc", "lk", "hc", "ec")
"""EC is the two-frame extended comfort against :func:`previous_human_plan` (the same in both filter modes)."""
TOLERANT_METRICS = ("ep", "epdms")
METRICS = EXACT_METRICS + TOLERANT_METRICS
TOLERANCE = 0.01
"""EP and EPDMS agree when within this; the other sub-scores must be equal (to 1e-6)."""
EXACT_EPS = 1e-6
PLAN_NAMES = ("human", "constant_velocity", "human_x0.5", "human_x1.4", "left_2m", "right_3.5m", "random_arc",
              "stop")
PLAN_SEED = 0
PLAN_TIMES = np.arange(1, 9) * 0.5
"""Plan poses at t = 0.5 .. 4 s."""
NAVSIM_SIDE = Path(__file__).with_name("navsim_side.py")
ENV_PYTHON = "IRLVLA_NAVSIM_PYTHON"
SKIP_HINT = (f"point --navsim-python (or ${ENV_PYTHON}) at the python of an environment with navsim and nuplan-devkit "
             "installed, e.g. --navsim-python ~/navsim-venv/bin/python")


# --------------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------------


def _rescaled_along(path: np.ndarray, factor: float) -> np.ndarray:
    """The human's (8, 3) poses driven ``factor`` times as fast along the same path (straight on past its end)."""
    pts = np.vstack([np.zeros(3), path])
    yaw = np.unwrap(pts[:, 2])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1))])
    if s[-1] < 1e-3:
        return path.copy()
    target = s[1:] * factor
    s_inc = s + np.arange(len(s)) * 1e-9  # strictly increasing for np.interp (a standing ego repeats s)
    out = np.empty((8, 3))
    out[:, 0] = np.interp(target, s_inc, pts[:, 0])
    out[:, 1] = np.interp(target, s_inc, pts[:, 1])
    out[:, 2] = np.interp(target, s_inc, yaw)
    beyond = target > s[-1]
    extra = target[beyond] - s[-1]
    out[beyond, 0] = pts[-1, 0] + extra * np.cos(yaw[-1])
    out[beyond, 1] = pts[-1, 1] + extra * np.sin(yaw[-1])
    out[beyond, 2] = yaw[-1]
    out[:, 2] = wrap_angle(out[:, 2])
    return out


def _arc(speed: float, curvature: float) -> np.ndarray:
    """(8, 3) poses of a constant-speed, constant-curvature arc from the origin."""
    s = speed * PLAN_TIMES
    yaw = curvature * s
    if abs(curvature) < 1e-9:
        x, y = s, np.zeros_like(s)
    else:
        x, y = np.sin(yaw) / curvature, (1.0 - np.cos(yaw)) / curvature
    return np.stack([x, y, wrap_angle(yaw)], axis=1)


def make_plans(scene: Scene, seed: int = PLAN_SEED) -> np.ndarray:
    """The fixed plan set of :data:`PLAN_NAMES` for one scene: (8 plans, 8 poses, [x, y, yaw]) in the t0 ego frame.

    * ``human``: the logged future;
    * ``constant_velocity``: straight ahead at the t0 speed (NAVSIM's ConstantVelocityAgent);
    * ``human_x0.5`` / ``human_x1.4``: the human's path at 0.5x / 1.4x its pace (past the path's end: straight on
      along its final heading);
    * ``left_2m`` / ``right_3.5m``: the human shifted 2 m left / 3.5 m right along its own left normal, ramped in
      linearly over the first 2 s;
    * ``random_arc``: constant speed U(0, max(2 v, 5)) m/s and curvature U(-0.08, 0.08) 1/m, drawn from a generator
      seeded by ``seed`` and the scene token (the same plan whatever the scene order);
    * ``stop``: all poses at the origin.
    """
    human = np.asarray(scene.ego.future, np.float64)[:8]
    speed = float(np.hypot(*np.asarray(scene.ego.velocity, np.float64)[:2]))
    plans = [human.copy()]
    cv = np.zeros((8, 3))
    cv[:, 0] = speed * PLAN_TIMES
    plans.append(cv)
    plans += [_rescaled_along(human, 0.5), _rescaled_along(human, 1.4)]
    ramp = np.clip(PLAN_TIMES / 2.0, 0.0, 1.0)
    for offset in (2.0, -3.5):
        shifted = human.copy()
        shifted[:, 0] -= np.sin(human[:, 2]) * offset * ramp
        shifted[:, 1] += np.cos(human[:, 2]) * offset * ramp
        plans.append(shifted)
    rng = np.random.default_rng([seed, zlib.crc32(scene.token.encode())])
    plans.append(_arc(rng.uniform(0.0, max(2.0 * speed, 5.0)), rng.uniform(-0.08, 0.08)))
    plans.append(np.zeros((8, 3)))
    return np.stack(plans)


def previous_human_plan(scene: Scene) -> np.ndarray:
    """The logged drive as a plan made 0.5 s earlier: poses at t = 0 .. 3.5 s (8, 3) in the ego frame at t = -0.5 s
    (the previous frame of the same log), for the two-frame extended comfort (EC)."""
    poses = np.vstack([np.asarray(scene.ego.history, np.float64)[-1:], np.asarray(scene.ego.future, np.float64)[:7]])
    x0, y0, h0 = np.asarray(scene.ego.history, np.float64)[-2]
    c, s = np.cos(h0), np.sin(h0)
    dx, dy = poses[:, 0] - x0, poses[:, 1] - y0
    out = np.stack([c * dx + s * dy, -s * dx + c * dy, poses[:, 2] - h0], axis=1)
    out[:, 2] = wrap_angle(out[:, 2])
    return out


# --------------------------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class BadScene:
    """A scene left out of the comparison: source, token (or item), stage and the reason."""

    source: str
    token: str
    stage: str
    reason: str

    def to_json(self) -> dict:
        return {"source": self.source, "token": self.token, "stage": self.stage, "reason": self.reason}


def _tqdm(iterable=None, *, enabled: bool, **kw):
    from tqdm import tqdm

    return tqdm(iterable, disable=not enabled, file=sys.stderr, **kw)


def select_synthetic(num: int = DEFAULT_SYNTHETIC, *, split: str = SYNTHETIC_SPLIT, progress: bool = False,
                     bad: list[BadScene] | None = None) -> list[Scene]:
    """The first ``num`` scenes of ``split`` balanced over :data:`irlvla_gym.scenes.synthetic.LAYOUTS`.

    Scenes are taken in index order while their layout has fewer than ceil(num / #layouts) scenes, so every layout
    gets at least ``num - (#layouts - 1) * ceil(num / #layouts)`` (5 of 40 for 6 layouts) as long as the split has
    them within the first 50 * num scenes.
    """
    from irlvla_gym.scenes import synthetic
    from irlvla_gym.scenes.sources import SkippedItem

    if num <= 0:
        return []
    quota = math.ceil(num / len(synthetic.LAYOUTS))
    counts = {layout: 0 for layout in synthetic.LAYOUTS}
    chosen: list[Scene] = []
    scan = min(synthetic.split_size(split), max(50 * num, 200))
    with _tqdm(total=num, enabled=progress, desc="synthetic scenes", unit="scene") as bar:
        for item in synthetic.iter_scenes(split, num=scan):
            if isinstance(item, SkippedItem):
                if bad is not None:
                    bad.append(BadScene("synthetic", str(item.item), "build", str(item.error)))
                continue
            layout = synthetic.scene_layout(item)
            if counts.get(layout, 0) < quota:
                counts[layout] = counts.get(layout, 0) + 1
                chosen.append(item)
                bar.update(1)
            if len(chosen) >= num:
                break
    return chosen


def _evenly(items: list, limit: int | None) -> list:
    """``limit`` items evenly spaced over ``items`` (all when limit is None or not smaller)."""
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in idx]


def real_scenes(data_dir: str | Path, sources: Sequence[str], *, limit: int | None = None,
                stride: int = 1, bad: list[BadScene] | None = None) -> dict[str, list[Scene]]:
    """The real sample windows per source ('av2', 'nuscenes', 'waymo', 'av2-forecasting') present under ``data_dir``
    (:func:`irlvla_gym.evaluation.real_data.iter_real_scenes`); windows that fail to convert go to ``bad``.
    ``limit``: at most that many evenly spaced windows per source. Missing sample folders give no scenes; a
    nuScenes sample without ``nuscenes_drivable_areas/`` raises FileNotFoundError naming that folder."""
    from irlvla_gym.evaluation.real_data import iter_real_scenes, missing_sources

    def skipped(source: str, item) -> None:
        if bad is not None:
            bad.append(BadScene(source, str(item.item), "convert", str(item.error)))

    out: dict[str, list[Scene]] = {}
    present = [s for s in sources if s not in missing_sources(data_dir, sources)]
    if present:
        for source, scene in iter_real_scenes(data_dir, stride=stride, sources=present, on_skip=skipped):
            out.setdefault(source, []).append(scene)
    return {source: _evenly(scenes, limit) for source, scenes in out.items()}


# --------------------------------------------------------------------------------------------------------------------
# Export and the project's scores
# --------------------------------------------------------------------------------------------------------------------


def export_source(scenes: list[Scene], out_dir: Path, source: str, bad: list[BadScene]) -> list[Scene]:
    """Export ``scenes`` to ``out_dir`` (``logs/``, ``maps/``); returns the exported scenes.

    When the export of the whole list fails, each scene is tried alone (in a scratch folder) and the failing ones are
    recorded in ``bad`` and dropped before exporting the rest.
    """
    from irlvla_gym.scenes.navsim import export_navsim

    if not scenes:
        return []
    try:
        export_navsim(scenes, out_dir)
        return scenes
    except Exception:
        pass
    kept = []
    with tempfile.TemporaryDirectory() as scratch:
        for k, scene in enumerate(scenes):
            try:
                export_navsim([scene], Path(scratch) / str(k))
                kept.append(scene)
            except Exception as exc:
                bad.append(BadScene(source, scene.token, "export", f"{type(exc).__name__}: {exc}"))
    shutil.rmtree(out_dir / "logs", ignore_errors=True)
    shutil.rmtree(out_dir / "maps", ignore_errors=True)
    if kept:
        try:  # each scene exported alone; together they can still fail (placement-dependent geometry)
            export_navsim(kept, out_dir)
        except Exception as exc:
            bad.append(BadScene(source, "*", "export", f"{type(exc).__name__}: {exc}"))
            return []
    return kept


def _one_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def score_ours(logs: Path, maps_root: Path, plans: dict[str, np.ndarray], modes: Sequence[str] = MODES, *,
               previous_plans: dict[str, np.ndarray] | None = None, progress: bool = False,
               desc: str = "ours") -> dict:
    """The project's scores of ``plans`` ({token: (K, 8, 3)}) on the scenes read back from a NAVSIM export; with
    ``previous_plans`` ({token: (K, 8, 3)} in the t = -0.5 s ego frame) also EC (in every mode's row).

    Returns the same structure as ``navsim_side.py``'s answer: ``{"results": {token: {"pdm_normaliser": m,
    "plans": [{"progress_raw": m, "on": {...}, "off": {...}}]}}, "errors": {token: reason}}``.
    """
    from irlvla_gym.metrics import prepare_scene, score_plans
    from irlvla_gym.metrics.config import SUB_SCORES
    from irlvla_gym.planners import pdm_reference_progress
    from irlvla_gym.scenes.navsim import SceneFilter, iter_scenes
    from irlvla_gym.scenes.scene import PACIFICA
    from irlvla_gym.scenes.sources import SkippedItem

    out: dict = {"results": {}, "errors": {}}
    read: dict[str, Scene] = {}
    try:
        for item in iter_scenes(logs, maps_root, scene_filter=SceneFilter(tokens=list(plans))):
            if isinstance(item, SkippedItem):
                out["errors"][str(item.item)] = f"read back: {item.error}"
            else:
                read[item.token] = item
    except Exception as exc:  # the whole export is unreadable: every token fails
        for token in plans:
            out["errors"][token] = f"read back: {type(exc).__name__}: {exc}"
        return out
    for token, scene_plans in _tqdm(plans.items(), enabled=progress, desc=desc, unit="scene"):
        scene = read.get(token)
        if scene is None:
            out["errors"].setdefault(token, "not read back by the project's NAVSIM reader")
            continue
        # NAVSIM simulates and scores every scene with the Pacifica's dimensions (get_pacifica_parameters() in its
        # simulator, scorer and comfort metrics) whatever car recorded it; compare like with like.
        scene = scene.replace(ego=dataclasses.replace(scene.ego, vehicle=PACIFICA))
        try:
            ctx = prepare_scene(scene)
            reference = float(pdm_reference_progress(scene, context=ctx))
            rows = [{} for _ in range(len(scene_plans))]
            for mode in modes:
                r = score_plans(scene, scene_plans, human_filter=mode == "on", reference_progress=reference,
                                impl="fast", context=ctx)
                for k, row in enumerate(rows):
                    row["progress_raw"] = float(r.progress[k])
                    row[mode] = {m: float(getattr(r, m)[k]) for m in SUB_SCORES if m != "ec"}
                    row[mode]["epdms"] = float(r.epdms[k])  # without EC (one frame), as NAVSIM's side
            previous = (previous_plans or {}).get(token)
            if previous is not None:
                r = score_plans(scene, scene_plans, previous_plans=previous, human_filter=False,
                                reference_progress=reference, impl="fast", context=ctx)
                for k, row in enumerate(rows):
                    for mode in modes:
                        row[mode]["ec"] = float(r.ec[k])
            out["results"][token] = {"pdm_normaliser": reference, "plans": rows}
        except Exception as exc:
            out["errors"][token] = f"{type(exc).__name__}: {exc}"
    return out


# --------------------------------------------------------------------------------------------------------------------
# The NAVSIM side (subprocess)
# --------------------------------------------------------------------------------------------------------------------


def navsim_command(python: str) -> list[str]:
    """The interpreter as an argv prefix: a path to an existing file as is, else a shell-like command line (e.g.
    ``"conda run -n navsim python"``)."""
    if Path(python).expanduser().exists():
        return [str(Path(python).expanduser())]
    return shlex.split(python)


def check_navsim(python: str | None, timeout: float = 180.0) -> str | None:
    """None when ``python`` can import navsim and nuplan, else a one-line reason."""
    if not python:
        return f"no NAVSIM interpreter given: {SKIP_HINT}"
    cmd = navsim_command(python)
    if not cmd or (not Path(cmd[0]).exists() and shutil.which(cmd[0]) is None):
        return f"NAVSIM interpreter {python!r} not found: {SKIP_HINT}"
    try:
        proc = subprocess.run([*cmd, "-c", "import navsim, nuplan"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"NAVSIM interpreter {python!r} could not be run ({type(exc).__name__}: {exc}): {SKIP_HINT}"
    if proc.returncode != 0:
        why = _one_line(proc.stderr) or f"exit code {proc.returncode}"
        return f"'import navsim, nuplan' fails in {python!r} ({why}): {SKIP_HINT}"
    return None


def run_navsim_side(python: str, request: dict, work_dir: Path, *, maps_root: Path,
                    on_progress: Callable[[int, int], None] | None = None, timeout: float | None = None) -> dict:
    """Run ``navsim_side.py`` on ``request`` under ``python``; returns its answer.

    Writes ``work_dir/navsim_request.json``; the answer is ``request["out"]``; stdout and non-progress stderr lines go to
    ``work_dir/navsim_side.log``. A crash gives ``{"status": "failed", "error": ...}``.
    """
    req_path = work_dir / "navsim_request.json"
    req_path.write_text(json.dumps(request))
    out_path = Path(request["out"])
    if out_path.exists():
        out_path.unlink()
    env = dict(os.environ, NUPLAN_MAPS_ROOT=str(maps_root))
    env.setdefault("OMP_NUM_THREADS", "1")
    log_path = work_dir / "navsim_side.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*navsim_command(python), str(NAVSIM_SIDE), str(req_path)], stdout=log,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=str(work_dir))
        assert proc.stderr is not None
        for line in proc.stderr:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "NAVSIM_PROGRESS" and parts[1].isdigit() and parts[2].isdigit():
                if on_progress is not None:
                    on_progress(int(parts[1]), int(parts[2]))
            else:
                log.write(line)
                log.flush()
            if timeout is not None and time.time() - t0 > timeout:
                proc.kill()
                break
        rc = proc.wait()
    if out_path.is_file():
        try:
            return json.loads(out_path.read_text())
        except json.JSONDecodeError as exc:
            return {"status": "failed", "error": f"unreadable answer {out_path}: {exc}", "results": {}, "errors": {}}
    tail = log_path.read_text().strip().splitlines()[-5:]
    return {"status": "failed", "error": f"navsim_side.py exited {rc} without an answer; log tail: " + " | ".join(tail),
            "results": {}, "errors": {}}


# --------------------------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------------------------


def _agrees(metric: str, a: float, b: float) -> bool:
    tol = TOLERANCE if metric in TOLERANT_METRICS else EXACT_EPS
    return abs(a - b) <= tol


def compare(ours: dict, navsim: dict, plan_names: Sequence[str], modes: Sequence[str] = MODES) -> dict:
    """Agreement of two answers (``score_ours`` / ``navsim_side.py`` structure) on the tokens both scored.

    Returns ``{"scenes": n, "plans": n, "modes": {mode: {metric: {"agree": k, "n": n, "share": k / n,
    "mean_abs_diff": d}}}, "disagreements": [{mode, token, plan, metric, navsim, ours}], "progress": {...},
    "normaliser": {...}}``. ``progress``: |NAVSIM - ours| raw plan progress (m): mean, median, max, share within
    0.5 m; ``normaliser``: the same for PDM-Closed's progress x product (ours: the EP reference progress).
    """
    tokens = [t for t in navsim.get("results", {}) if t in ours.get("results", {})]
    agree = {m: {s: 0 for s in METRICS} for m in modes}
    diffs: dict[str, dict[str, list[float]]] = {m: {s: [] for s in METRICS} for m in modes}
    dis: list[dict] = []
    progress_d, norm_d = [], []
    n_plans = 0
    for token in tokens:
        nrec, orec = navsim["results"][token], ours["results"][token]
        if nrec.get("pdm_normaliser") is not None and orec.get("pdm_normaliser") is not None:
            norm_d.append(abs(nrec["pdm_normaliser"] - orec["pdm_normaliser"]))
        for k, (nrow, orow) in enumerate(zip(nrec["plans"], orec["plans"])):
            n_plans += 1
            name = plan_names[k] if k < len(plan_names) else str(k)
            if nrow.get("progress_raw") is not None and orow.get("progress_raw") is not None:
                progress_d.append(abs(nrow["progress_raw"] - orow["progress_raw"]))
            for mode in modes:
                if mode not in nrow or mode not in orow:
                    continue
                for s in METRICS:
                    if s not in nrow[mode] or s not in orow[mode]:  # EC only where both sides had a previous plan
                        continue
                    a, b = float(nrow[mode][s]), float(orow[mode][s])
                    diffs[mode][s].append(abs(a - b))
                    if _agrees(s, a, b):
                        agree[mode][s] += 1
                    else:
                        dis.append({"mode": mode, "token": token, "plan": name, "metric": s, "navsim": a, "ours": b})
    dis.sort(key=lambda d: list(modes).index(d["mode"]))  # stable: filter on first, then off, token order kept
    table = {mode: {s: {"agree": agree[mode][s], "n": len(diffs[mode][s]),
                        "share": agree[mode][s] / len(diffs[mode][s]) if diffs[mode][s] else float("nan"),
                        "mean_abs_diff": float(np.mean(diffs[mode][s])) if diffs[mode][s] else float("nan")}
                    for s in METRICS} for mode in modes}

    def stats(d: list[float]) -> dict:
        if not d:
            return {"n": 0}
        a = np.asarray(d)
        return {"n": len(a), "mean": float(a.mean()), "median": float(np.median(a)), "max": float(a.max()),
                "within_0.5m": float((a < 0.5).mean())}

    return {"scenes": len(tokens), "plans": n_plans, "modes": table, "disagreements": dis,
            "progress": stats(progress_d), "normaliser": stats(norm_d)}


def format_report(report: dict, max_disagreements: int = 30) -> str:
    """The agreement table per source and filter mode, progress lines, bad scenes and disagreements, as text."""
    lines = []
    head = f"{'source':<10} {'filter':<6} {'scenes':>6} {'plans':>5}  " + " ".join(f"{s.upper():>6}" for s in METRICS)
    lines += [head, "-" * len(head)]
    sources = report.get("sources", {})
    for source, cmp in sources.items():
        for mode, table in cmp["modes"].items():
            lines.append(f"{source:<10} {mode:<6} {cmp['scenes']:>6} {cmp['plans']:>5}  "
                         + " ".join(f"{table[s]['share']:6.3f}" for s in METRICS))
            lines.append(f"{'':<10} {'mean|d|':<6} {'':>6} {'':>5}  "
                         + " ".join(f"{table[s]['mean_abs_diff']:6.3f}" for s in METRICS))
    lines.append(f"(share of plans that agree: {', '.join(s.upper() for s in EXACT_METRICS)} equal, EP and EPDMS "
                 f"within {TOLERANCE}; EPDMS without EC; EC against the logged drive as the plan of the previous "
                 f"frame; filter = NAVSIM's human false-positive filter)")
    for source, cmp in sources.items():
        p, n = cmp["progress"], cmp["normaliser"]
        if p.get("n"):
            lines.append(f"{source}: raw progress |navsim - ours| (m): mean {p['mean']:.3f}, median {p['median']:.3f}, "
                         f"max {p['max']:.3f}, within 0.5 m {p['within_0.5m']:.3f} (n={p['n']})")
        if n.get("n"):
            lines.append(f"{source}: PDM-Closed normaliser |navsim - ours| (m): mean {n['mean']:.2f}, "
                         f"median {n['median']:.2f}, max {n['max']:.2f} (n={n['n']})")
    bad = report.get("bad_scenes", [])
    if bad:
        lines.append(f"bad scenes (left out): {len(bad)}")
        for b in bad[:max_disagreements]:
            lines.append(f"  {b['source']:<10} {b['token']}  [{b['stage']}] {_one_line(b['reason'])[:200]}")
        if len(bad) > max_disagreements:
            lines.append(f"  ... {len(bad) - max_disagreements} more")
    for source, cmp in sources.items():
        dis = cmp["disagreements"]
        if not dis:
            continue
        lines.append(f"{source}: {len(dis)} disagreements (filter, token, plan, metric, navsim, ours)"
                     + (f", first {max_disagreements}" if len(dis) > max_disagreements else ""))
        for d in dis[:max_disagreements]:
            lines.append(f"  {d['mode']:<3} {d['token']:<44} {d['plan']:<17} {d['metric']:<5} "
                         f"{d['navsim']:8.4f} {d['ours']:8.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DiffConfig:
    """Options of :func:`run_diff` (the CLI flags)."""

    navsim_python: str | None = None
    sources: tuple[str, ...] = SOURCES
    scenes: int | None = None
    data_dir: Path | None = None
    out: Path | None = None
    modes: tuple[str, ...] = MODES
    shims: bool = False
    stride: int = 1
    progress: bool = True
    navsim_timeout: float | None = None
    extra: dict = field(default_factory=dict)


def run_diff(cfg: DiffConfig) -> dict:
    """Run the differential check; returns the report (``status``: "ok" or "skipped")."""
    for s in cfg.sources:
        if s not in SOURCES:
            raise ValueError(f"unknown source {s!r}; choose from {','.join(SOURCES)}")
    reason = check_navsim(cfg.navsim_python)
    if reason is not None:
        return {"status": "skipped", "reason": reason}
    t_start = time.time()
    bad: list[BadScene] = []
    by_source = _diff_scenes(cfg, bad)
    tmp = None
    if cfg.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="irlvla-navsim-diff-")
        root = Path(tmp.name)
    else:
        root = Path(cfg.out)
        root.mkdir(parents=True, exist_ok=True)
    report: dict = {"status": "ok", "sources": {}, "bad_scenes": [], "plan_names": list(PLAN_NAMES),
                    "modes": list(cfg.modes), "navsim_python": cfg.navsim_python, "shims": cfg.shims,
                    "out": str(root) if cfg.out is not None else None, "scene_counts": {}}
    try:
        work = _export_sources(by_source, root, bad, report)
        answers = _score_sources(work, cfg)
        for source, (ours, answer) in answers.items():
            if answer.get("status") != "ok":
                bad.append(BadScene(source, "*", "navsim", answer.get("error", "NAVSIM side failed")))
            for token, why in ours.get("errors", {}).items():
                bad.append(BadScene(source, token, "ours", why))
            for token, why in answer.get("errors", {}).items():
                bad.append(BadScene(source, token, "navsim", why))
            report["sources"][source] = compare(ours, answer, PLAN_NAMES, cfg.modes)
            if answer.get("versions"):
                report.setdefault("navsim_versions", answer["versions"])
        report["bad_scenes"] = [b.to_json() for b in bad]
        report["seconds"] = time.time() - t_start
        if cfg.out is not None:
            (root / "report.json").write_text(json.dumps(report, indent=1))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return report


def _diff_scenes(cfg: DiffConfig, bad: list[BadScene]) -> dict[str, list[Scene]]:
    """The scenes to compare per source (synthetic and the real sources in ``cfg.data_dir``); sources without any
    left out; unusable items are appended to ``bad``. Raises ValueError when no source has a scene."""
    from irlvla_gym.evaluation.real_data import default_data_dir

    by_source: dict[str, list[Scene]] = {}
    if "synthetic" in cfg.sources:
        by_source["synthetic"] = select_synthetic(DEFAULT_SYNTHETIC if cfg.scenes is None else cfg.scenes,
                                                  progress=cfg.progress, bad=bad)
    real = [s for s in cfg.sources if s != "synthetic"]
    if real:
        data_dir = cfg.data_dir if cfg.data_dir is not None else default_data_dir()
        by_source.update(real_scenes(data_dir, real, limit=cfg.scenes, stride=cfg.stride, bad=bad))
    by_source = {s: v for s, v in by_source.items() if v}
    if not by_source:
        raise ValueError(f"no scene for sources {','.join(cfg.sources)}")
    return by_source


def _export_sources(by_source: dict[str, list[Scene]], root: Path, bad: list[BadScene], report: dict
                    ) -> dict[str, tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Export each source's scenes to ``root/<source>`` (NAVSIM layout) and make their plans: source -> (folder,
    token -> (K, 8, 3) plans, token -> (K, 8, 3) previous-frame plans). Records the kept scene counts in
    ``report``."""
    work: dict[str, tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for source, scenes in by_source.items():
        sdir = root / source
        sdir.mkdir(parents=True, exist_ok=True)
        kept = export_source(scenes, sdir, source, bad)
        work[source] = (sdir, {s.token: make_plans(s) for s in kept},
                        {s.token: np.repeat(previous_human_plan(s)[None], len(PLAN_NAMES), axis=0) for s in kept})
        report["scene_counts"][source] = len(kept)
    return work


def _score_sources(work: dict[str, tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]], cfg: DiffConfig
                   ) -> dict[str, tuple[dict, dict]]:
    """Score every exported source with our scorer (``ours.json``), then on the NAVSIM side (one subprocess per
    source, one progress bar over all): source -> (our answer, NAVSIM's answer)."""
    answers: dict[str, tuple[dict, dict]] = {}
    for source, (sdir, plans, previous) in work.items():
        if not plans:
            continue
        ours = score_ours(sdir / "logs", sdir / "maps", plans, cfg.modes, previous_plans=previous,
                          progress=cfg.progress, desc=f"ours {source}")
        (sdir / "ours.json").write_text(json.dumps(ours))
        answers[source] = (ours, {})
    total = sum(len(p) for _, p, _ in work.values())
    with _tqdm(total=total, enabled=cfg.progress, desc="NAVSIM", unit="scene") as bar:
        base = 0
        for source, (sdir, plans, previous) in work.items():
            if not plans:
                continue

            def on_progress(done: int, _total: int, base=base) -> None:
                bar.n = base + done
                bar.refresh()

            request = {"logs": str((sdir / "logs").resolve()), "maps_root": str((sdir / "maps").resolve()),
                       "map_version": "nuplan-maps-v1.0", "out": str((sdir / "navsim.json").resolve()),
                       "modes": list(cfg.modes), "plan_names": list(PLAN_NAMES),
                       "plans": {t: p.tolist() for t, p in plans.items()},
                       "previous_plans": {t: p.tolist() for t, p in previous.items()}, "shims": cfg.shims,
                       "work_dir": str(sdir.resolve())}
            answer = run_navsim_side(cfg.navsim_python, request, sdir, maps_root=(sdir / "maps").resolve(),
                                     on_progress=on_progress, timeout=cfg.navsim_timeout)
            base += len(plans)
            bar.n = base
            bar.refresh()
            answers[source] = (answers[source][0], answer)
    return answers


def _parse_modes(value: str | None) -> tuple[str, ...]:
    if value in (None, "both"):
        return MODES
    if value in MODES:
        return (value,)
    raise ValueError(f"--filter must be on, off or both, got {value!r}")


def main_navsim(args: argparse.Namespace) -> int:
    """``irlvla check-scorer --navsim`` (dispatched from :mod:`irlvla_gym.evaluation.real_data`)."""
    sources = tuple(s.strip() for s in (args.sources or ",".join(SOURCES)).split(",") if s.strip())
    cfg = DiffConfig(navsim_python=args.navsim_python or os.environ.get(ENV_PYTHON) or None, sources=sources,
                     scenes=args.scenes, data_dir=args.data, out=args.out, modes=_parse_modes(args.filter),
                     shims=args.navsim_shims, stride=args.stride, progress=not args.no_progress)
    report = run_diff(cfg)
    if args.json:
        if report.get("status") == "ok":
            cap = args.max_disagreements
            report = dict(report, sources={
                s: dict(c, disagreements_total=len(c["disagreements"]), disagreements=c["disagreements"][:cap])
                for s, c in report["sources"].items()})
        print(json.dumps(report, indent=1))
    elif report["status"] == "skipped":
        print(f"irlvla check-scorer --navsim: skipped: {report['reason']}")
    else:
        print(format_report(report, args.max_disagreements))
        if report.get("out"):
            print(f"export, scores and report.json kept in {report['out']}")
    return 0
