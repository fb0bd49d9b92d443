"""NAVSIM side of ``irlvla check-scorer --navsim``: score plans on a NAVSIM export with the official NAVSIM v2 scorer.

This file is a standalone script. It runs under the user's NAVSIM interpreter (a venv with navsim + nuplan-devkit
installed) and imports nothing but navsim, nuplan, numpy and the standard library -- never ``irlvla_gym``.
:mod:`irlvla_gym.evaluation.navsim_diff` runs it in a subprocess::

    NUPLAN_MAPS_ROOT=<export>/maps <navsim python> navsim_side.py REQUEST.json

What it does, for every scene token of the request, as NAVSIM's ``run_pdm_score.py`` does for one frame:

1. load the export's log pickles with NAVSIM's ``SceneLoader`` (``SceneFilter(num_history_frames=4,
   num_future_frames=10, has_route=True, tokens=...)``, no sensors) and ``Scene.from_scene_dict_list``;
2. wrap it in ``NavSimScenario`` (nuPlan map API on ``maps_root``) and build the metric cache with
   ``MetricCacheProcessor`` (PDM-Closed trajectory, observation, drivable-area map, centerline, human trajectory);
3. score each plan (``Trajectory`` of 8 poses at 0.5 s) with ``navsim.evaluate.pdm_score.pdm_score``:
   ``PDMSimulator`` + ``PDMScorer`` (``human_penalty_filter`` True for mode "on", False for "off") + non-reactive
   ``LogReplayTrafficAgents``.

Request (JSON)::

    {"logs": DIR, "maps_root": DIR, "map_version": "nuplan-maps-v1.0", "out": FILE,
     "modes": ["on", "off"], "plan_names": [...], "plans": {token: K x 8 x [x, y, yaw]},
     "previous_plans": {token: K x 8 x [x, y, yaw]} (optional, ego frame at t = -0.5 s: enables EC),
     "shims": false, "work_dir": DIR}

Answer (JSON, written atomically to ``out``)::

    {"status": "ok" | "failed", "error": str (when failed), "versions": {...},
     "results": {token: {"scene_type": str, "pdm_progress_raw": m, "pdm_prod": 0/1, "pdm_normaliser": m,
                         "plans": [{"progress_raw": m, "on": {sub-score: value}, "off": {...}}, ...]}},
     "errors": {token: traceback text}}

Sub-scores per mode: nc, dac, ddc, tlc, ep, ttc, lk, hc (NAVSIM's columns), ``epdms`` (EPDMS without EC: the
product of the multiplicative metrics times the weighted mean of EP, TTC, LK, HC; a single frame has no previous
plan), ``pdm_score`` (NAVSIM's own column), and with ``previous_plans`` ``ec``: the two-frame extended comfort of
the plan against the previous frame's plan k (NAVSIM's ``ego_is_two_frame_extended_comfort`` on the overlapping
36 states, as ``SceneAggregator`` computes it). ``progress_raw`` is NAVSIM's raw progress of the plan along the
centerline (m); ``pdm_normaliser`` = PDM-Closed's raw progress x its multiplicative product (m), the EP normaliser
when it beats the plan's own masked progress.

Progress goes to stderr as lines ``NAVSIM_PROGRESS <done> <total>``; any other stderr line is a log message.

``shims: true`` (``--navsim-shims``) is a WORKAROUND for exports written by older versions of the project's exporter
only: (1) alias ``numpy._core`` to ``numpy.core`` so that pickles written under numpy 2 load under NAVSIM's
numpy 1.x; (2) write ``<work_dir>/maps_navsim``, a maps root whose json lists all four nuPlan cities, each linking
to the exported ``map.gpkg`` (nuPlan's GPKGMapsDB loads every city of the json). Current exports need neither.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

NUPLAN_CITIES = ("sg-one-north", "us-ma-boston", "us-nv-las-vegas-strip", "us-pa-pittsburgh-hazelwood")
SHORT = ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc")
COLUMNS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
           "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
           "history_comfort")


def apply_numpy_core_shim() -> None:
    """Shim 1: let numpy 1.x unpickle arrays pickled under numpy 2 (``numpy._core.*`` globals)."""
    import importlib

    import numpy.core

    try:
        importlib.import_module("numpy._core")
    except ImportError:
        sys.modules["numpy._core"] = numpy.core
    for sub in ("multiarray", "numeric", "_multiarray_umath"):
        try:
            importlib.import_module(f"numpy._core.{sub}")
        except ImportError:  # numpy 1.26 ships numpy._core with only part of its submodules
            sys.modules[f"numpy._core.{sub}"] = importlib.import_module(f"numpy.core.{sub}")


def make_four_city_maps_root(maps_root: Path, dest: Path) -> Path:
    """Shim 2: a maps root at ``dest`` whose json lists all four nuPlan cities, each linking to the exported gpkg."""
    src = json.loads((maps_root / "nuplan-maps-v1.0.json").read_text())
    (name, entry), = list(src.items())[:1]
    gpkg = (maps_root / name / entry["version"] / "map.gpkg").resolve()
    out = {}
    for city in NUPLAN_CITIES:
        d = dest / city / entry["version"]
        d.mkdir(parents=True, exist_ok=True)
        link = d / "map.gpkg"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(gpkg)
        out[city] = {"version": entry["version"], "layers": {}}
    (dest / "nuplan-maps-v1.0.json").write_text(json.dumps(out))
    return dest


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def progress(done: int, total: int) -> None:
    print(f"NAVSIM_PROGRESS {done} {total}", file=sys.stderr, flush=True)


def score(request: dict) -> dict:
    """Score every (token, plan) of ``request``; returns the answer dict (see the module docstring)."""
    maps_root = Path(request["maps_root"])
    if request.get("shims"):
        apply_numpy_core_shim()
        maps_root = make_four_city_maps_root(maps_root, Path(request["work_dir"]) / "maps_navsim")
    os.environ["NUPLAN_MAPS_ROOT"] = str(maps_root)  # before importing nuPlan / NAVSIM

    import numpy as np

    import navsim
    import nuplan

    answer: dict = {"status": "ok", "results": {}, "errors": {},
                    "versions": {"navsim": str(Path(navsim.__file__).parent), "nuplan": str(Path(nuplan.__file__).parent),
                                 "numpy": np.__version__, "python": sys.version.split()[0]},
                    "maps_root": str(maps_root)}
    plans = request["plans"]
    modes = list(request.get("modes", ["on", "off"]))
    tools = NavsimTools(Path(request["logs"]), tokens=list(plans))
    frames_of = tools.loader.scene_frames_dicts
    for token in plans:
        if token not in frames_of:
            answer["errors"][token] = "NAVSIM's SceneLoader did not load this token (log/window/route filter)"
    todo = [t for t in plans if t in frames_of]
    progress(0, len(todo))
    for done, token in enumerate(todo, 1):
        try:
            answer["results"][token] = tools.score_scene(
                frames_of[token], plans[token], request.get("previous_plans", {}).get(token), modes,
                maps_root=maps_root, map_version=request.get("map_version", "nuplan-maps-v1.0"))
        except Exception:  # one bad scene is reported, the run goes on
            answer["errors"][token] = traceback.format_exc()
        progress(done, len(todo))
    return answer


class NavsimTools:
    """NAVSIM's scene loader (for the request's ``tokens`` in the ``logs`` folder), metric-cache processor, PDM
    simulator, the two PDM scorers (human penalty filter "on" / "off") and non-reactive traffic, as
    ``run_pdm_score.py`` builds them. Imports NAVSIM and nuPlan (``NUPLAN_MAPS_ROOT`` must be set): all at
    construction, so a missing NAVSIM name fails the whole run, not each scene."""

    def __init__(self, logs: Path, tokens: list[str]):
        from nuplan.planning.simulation.trajectory.trajectory_sampling import TrajectorySampling

        from navsim.common.dataclasses import Scene, SceneFilter, SensorConfig, Trajectory
        from navsim.common.dataloader import SceneLoader
        from navsim.evaluate.pdm_score import get_trajectory_as_array, pdm_score, transform_trajectory
        from navsim.planning.metric_caching.metric_cache_processor import MetricCacheProcessor
        from navsim.planning.scenario_builder.navsim_scenario import NavSimScenario
        from navsim.planning.simulation.planner.pdm_planner.scoring.pdm_comfort_metrics import (
            ego_is_two_frame_extended_comfort,
        )
        from navsim.planning.simulation.planner.pdm_planner.scoring.pdm_scorer import PDMScorer, PDMScorerConfig
        from navsim.planning.simulation.planner.pdm_planner.simulation.pdm_simulator import PDMSimulator
        from navsim.planning.simulation.planner.pdm_planner.utils.pdm_enums import WeightedMetricIndex
        from navsim.traffic_agents_policies.log_replay_traffic_agents import LogReplayTrafficAgents

        self.Scene, self.Trajectory, self.NavSimScenario = Scene, Trajectory, NavSimScenario
        self.pdm_score, self.get_trajectory_as_array = pdm_score, get_trajectory_as_array
        self.transform_trajectory, self.two_frame_comfort = transform_trajectory, ego_is_two_frame_extended_comfort
        self.ec_index = WeightedMetricIndex.TWO_FRAME_EXTENDED_COMFORT

        self.proposal_sampling = TrajectorySampling(num_poses=40, interval_length=0.1)  # simulated: 4 s at 0.1 s
        self.plan_sampling = TrajectorySampling(time_horizon=4, interval_length=0.5)  # plans: 8 poses at 0.5 s
        self.no_sensors = SensorConfig.build_no_sensors()
        scene_filter = SceneFilter(num_history_frames=4, num_future_frames=10, has_route=True, tokens=tokens)
        self.loader = SceneLoader(data_path=logs, original_sensor_path=None, scene_filter=scene_filter,
                                  sensor_config=self.no_sensors)
        self.processor = MetricCacheProcessor(cache_path=None, force_feature_computation=True,
                                              proposal_sampling=self.proposal_sampling)
        self.simulator = PDMSimulator(self.proposal_sampling)
        self.scorers = {
            "on": PDMScorer(self.proposal_sampling, config=PDMScorerConfig(human_penalty_filter=True)),
            "off": PDMScorer(self.proposal_sampling, config=PDMScorerConfig(human_penalty_filter=False))}
        self.traffic = LogReplayTrafficAgents(self.proposal_sampling)

    def score_scene(self, frames: list, plans: list, previous: list | None, modes: list[str], *, maps_root: Path,
                    map_version: str) -> dict:
        """The answer record of one scene (its loaded ``frames``): scene type, PDM-Closed's raw progress /
        multiplicative product / EP normaliser, and per plan (K x 8 x [x, y, yaw], ego frame) the raw progress and
        the sub-scores of each mode (plus ``ec`` against ``previous`` plan k when given)."""
        import numpy as np

        scene = self.Scene.from_scene_dict_list(frames, None, num_history_frames=4, num_future_frames=10,
                                           sensor_config=self.no_sensors)
        scenario = self.NavSimScenario(scene, map_root=str(maps_root), map_version=map_version)
        cache = self.processor.compute_metric_cache(scenario)
        rec = {"scene_type": str(cache.scene_type), "plans": []}
        prev_states = self.previous_states(scenario, previous) if previous is not None else []
        for k, poses in enumerate(plans):
            prow = self.score_plan(cache, np.asarray(poses, np.float32), prev_states[k] if prev_states else None,
                                   modes, rec)
            rec["plans"].append(prow)
        return rec

    def previous_states(self, scenario, previous: list) -> list:
        """EC: the previous frame's plans (K x 8 x [x, y, yaw], ego frame at t = -0.5 s), simulated from that frame's
        ego state as its own pdm_score would: K (41, 11) state arrays."""
        import numpy as np

        prev_ego = scenario.get_ego_state_at_iteration(-1)
        prev_states = []
        for pp in previous:
            ptraj = self.transform_trajectory(self.Trajectory(poses=np.asarray(pp, np.float32),
                                                              trajectory_sampling=self.plan_sampling), prev_ego)
            parr = self.get_trajectory_as_array(ptraj, self.proposal_sampling, prev_ego.time_point)
            prev_states.append(self.simulator.simulate_proposals(parr[None], prev_ego)[0])
        return prev_states

    def score_plan(self, cache, poses, prev_states, modes: list[str], rec: dict) -> dict:
        """Score one plan (8, 3) float32 in every mode; returns its record (``progress_raw``, one dict of
        sub-scores per mode, ``ec`` in each when ``prev_states`` (41, 11) is given) and stores PDM-Closed's
        figures in the scene record ``rec``."""
        import numpy as np

        # EC is compared over the overlap of the two frames' simulations (SceneAggregator._compute_two_frame_comfort).
        overlap = round(0.5 / self.proposal_sampling.interval_length)
        traj = self.Trajectory(poses=poses, trajectory_sampling=self.plan_sampling)
        prow: dict = {}
        # "off" first: its scorer state then holds the (PDM-Closed, plan) batch (the "on" call rescored
        # the human last).
        for mode in sorted(set(modes) | {"off"}, key=lambda m: m != "off"):
            scorer = self.scorers[mode]
            df, states = self.pdm_score(cache, traj, self.proposal_sampling, self.simulator, scorer, self.traffic)
            row = df.iloc[0]
            if mode == "off" and prev_states is not None:
                cur = states[:-overlap]
                prow["ec"] = float(self.two_frame_comfort(
                    cur[None], prev_states[overlap:][None], np.arange(len(cur)) * 0.1)[0])
            if mode == "off":
                prow["progress_raw"] = float(scorer._progress_raw[1])
                rec["pdm_progress_raw"] = float(scorer._progress_raw[0])
                rec["pdm_prod"] = float(scorer._multi_metrics.prod(axis=0)[0])
                rec["pdm_normaliser"] = rec["pdm_progress_raw"] * rec["pdm_prod"]
            if mode in modes:
                vals = {s: float(row[c]) for s, c in zip(SHORT, COLUMNS)}
                vals["epdms"] = epdms_no_ec(row, self.ec_index)
                vals["pdm_score"] = float(row["pdm_score"])
                prow[mode] = vals
        if "ec" in prow:
            ec = prow.pop("ec")
            for mode in modes:
                prow[mode]["ec"] = ec
        return prow


def epdms_no_ec(row, ec_index: int) -> float:
    """EPDMS of a NAVSIM score row without EC: run_pdm_score.compute_final_scores with the weight of EC (weighted
    metric ``ec_index``) removed (one frame: no previous plan)."""
    import numpy as np

    wm = np.asarray(row["weighted_metrics"], float)
    w = np.asarray(row["weighted_metrics_array"], float).copy()
    w[ec_index] = 0.0
    return float(row["multiplicative_metrics_prod"] * (wm * w).sum() / w.sum())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[0] + "\nusage: navsim_side.py REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    out = Path(request["out"])
    t0 = time.time()
    try:
        answer = score(request)
    except Exception:
        answer = {"status": "failed", "error": traceback.format_exc(), "results": {}, "errors": {}}
    answer["seconds"] = time.time() - t0
    write_json_atomic(out, answer)
    return 0 if answer["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
