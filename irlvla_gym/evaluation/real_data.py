"""``irlvla check-scorer``: the scorer's sanity check on the real recordings in ``../shared/data``.

Converts the real samples of every source (:data:`SOURCES`): the Argoverse 2 sensor logs
(:func:`irlvla_gym.scenes.av2.iter_scenes`), the nuScenes ScenarioNet sample with the drivable area of its city picked
from the per-city folder ``nuscenes_drivable_areas/`` and the Waymo ScenarioNet sample
(:func:`irlvla_gym.scenes.scenarionet.iter_scenes`), and the Argoverse 2 motion-forecasting scenarios
(:func:`irlvla_gym.scenes.av2_forecasting.iter_scenes`, the AV as ego); plans every scene with the logged human, the
constant-velocity agent and PDM-Closed, scores each plan with EP normalised by PDM-Closed (NAVSIM v2), and prints
mean EPDMS, PDMS and every sub-score per source and overall.

:func:`iter_real_scenes` defaults to the fixed AV2 + nuScenes set (:data:`DEFAULT_SOURCES`) that the evaluation
protocol (``baselines.protocol``) publishes; ``irlvla check-scorer`` asks for every source.

The human is scored with the human false-positive filter OFF (it would otherwise excuse itself); the other planners
with the filter as chosen (``--filter``, default off too, so the rows compare like with like).

Expected of a sound scorer: human mean EPDMS >= 0.9, constant velocity measurably lower, PDM-Closed within a
few points of the human.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from irlvla_gym.metrics.config import SUB_SCORES
from irlvla_gym.scenes.scene import Scene

AV2_DIR = "av2_sensor_logs"
SCENARIONET_DIR = "scenarionet_nuscenes"
WAYMO_DIR = "scenarionet_waymo"
AV2_FORECASTING_DIR = "av2_forecasting"
NUSCENES_DRIVABLE_DIR = "nuscenes_drivable_areas"
"""Folder of ``<city>_drivable_area.json`` GeoJSON files; each nuScenes scenario's city picks its own."""
SOURCE_DIRS = {"av2": AV2_DIR, "nuscenes": SCENARIONET_DIR, "waymo": WAYMO_DIR, "av2-forecasting": AV2_FORECASTING_DIR}
"""Real source name -> its sample folder under the data folder."""
SOURCES = tuple(SOURCE_DIRS)
"""Every real source (``irlvla check-scorer``'s default)."""
DEFAULT_SOURCES = ("av2", "nuscenes")
""":func:`iter_real_scenes`'s default: the fixed real set of the published evaluation protocol."""
PLANNER_NAMES = ("human", "constant_velocity", "pdm_closed")
COLUMNS = ("epdms", "pdms") + SUB_SCORES
"""Columns of the table: aggregates then the nine sub-scores."""


def default_data_dir() -> Path:
    """``../shared/data`` relative to the current directory, else relative to the repository root."""
    here = Path.cwd() / ".." / "shared" / "data"
    if here.is_dir():
        return here.resolve()
    repo = Path(__file__).resolve().parents[2]
    return (repo / ".." / "shared" / "data").resolve()


def real_source_dirs(data_dir: str | Path) -> dict[str, Path]:
    """Source name (:data:`SOURCES`) -> its sample folder under ``data_dir`` (which may not exist)."""
    data_dir = Path(data_dir)
    return {source: data_dir / folder for source, folder in SOURCE_DIRS.items()}


def missing_sources(data_dir: str | Path, sources: Sequence[str] = SOURCES) -> list[str]:
    """The ``sources`` whose sample folder is not under ``data_dir`` (:func:`iter_real_scenes` leaves them out)."""
    roots = real_source_dirs(data_dir)
    return [s for s in sources if s in roots and not roots[s].is_dir()]


def _source_items(source: str, root: Path, data_dir: Path, stride: int) -> Iterable:
    """The adapter's item stream (scenes and SkippedItems) of one present source folder."""
    if source == "av2":
        from irlvla_gym.scenes import av2

        return av2.iter_scenes(root, stride=stride)
    if source == "av2-forecasting":
        from irlvla_gym.scenes import av2_forecasting

        return av2_forecasting.iter_scenes(root, stride=stride, ego="av")
    from irlvla_gym.scenes import scenarionet

    if source == "waymo":  # Waymo ScenarioNet files carry their own lanes; no drivable-area layer
        return scenarionet.iter_scenes(root, stride=stride)
    drivable = data_dir / NUSCENES_DRIVABLE_DIR
    if not drivable.is_dir():  # nuScenes files hold no drivable polygons: the lanes' union would silently replace it
        raise FileNotFoundError(f"{drivable}: not found; {SCENARIONET_DIR}/ needs the per-city drivable areas "
                                f"({NUSCENES_DRIVABLE_DIR}/<city>_drivable_area.json) next to it")
    return scenarionet.iter_scenes(root, drivable_area=scenarionet.CityDrivableAreas(drivable), stride=stride)


def iter_real_scenes(data_dir: str | Path, *, stride: int = 1, sources: Sequence[str] = DEFAULT_SOURCES,
                     on_skip: Callable[[str, object], None] | None = None) -> Iterator[tuple[str, Scene]]:
    """``(source name, scene)`` for every real scene under ``data_dir`` of the given ``sources`` ('av2': AV2 sensor
    logs, 'nuscenes': the nuScenes ScenarioNet sample with each scenario's city's drivable area from
    ``nuscenes_drivable_areas/``, 'waymo': the Waymo ScenarioNet sample, 'av2-forecasting': the AV2
    motion-forecasting scenarios with the AV as ego). Sources whose sample folder is missing are left out
    (:func:`missing_sources`).

    Skipped items (bad windows) go to ``on_skip(source, item)`` (default: reported on stderr) and are left out.

    Raises:
        FileNotFoundError: none of the requested sample folders exists under ``data_dir``, or the nuScenes sample is
            there without ``nuscenes_drivable_areas/`` (raised before any scene is yielded).
        ValueError: an unknown name in ``sources``.
        DrivableAreaCityError: a nuScenes scenario's city has no file in ``nuscenes_drivable_areas/``.
    """
    from irlvla_gym.scenes.sources import SkippedItem

    data_dir = Path(data_dir)
    roots = real_source_dirs(data_dir)
    unknown = [s for s in sources if s not in roots]
    if unknown:
        raise ValueError(f"sources: unknown real source(s) {unknown}; choose from {SOURCES}")
    present = [s for s in sources if roots[s].is_dir()]
    if not present:
        raise FileNotFoundError(f"{data_dir}: none of {', '.join(roots[s].name + '/' for s in sources)} (pass --data)")
    streams = [(source, _source_items(source, roots[source], data_dir, stride)) for source in present]
    for source, items in streams:
        for item in items:
            if isinstance(item, SkippedItem):
                if on_skip is None:
                    print(f"skipped {item}", file=sys.stderr)
                else:
                    on_skip(source, item)
                continue
            yield source, item


@dataclass
class CheckResult:
    """Per-scene rows and the aggregated table of :func:`run_check`.

    Attributes:
        rows: one dict per (scene, planner): token, source, log, planner, the :data:`COLUMNS` values, and
            ``explain`` (the scorer's reasons when EPDMS < 1).
        table: planner -> source ('all' included) -> column -> mean.
        counts: source -> number of scenes.
        seconds: wall time per planner (planning + scoring).
    """

    rows: list[dict] = field(default_factory=list)
    table: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"table": self.table, "counts": self.counts, "seconds": self.seconds, "rows": self.rows}


def run_check(scenes: Sequence[tuple[str, Scene]], *, planners: Sequence[str] = PLANNER_NAMES,
              human_filter: bool = False, traffic: str = "log", progress: bool = True,
              default_speed_limit: float = 15.0, agent_forecast: str = "constant_velocity") -> CheckResult:
    """Plan and score every scene with each planner (EP normalised by PDM-Closed).

    Args:
        scenes: ``(source, scene)`` pairs.
        planners: names from :data:`PLANNER_NAMES`.
        human_filter: apply NAVSIM's human false-positive filter to the non-human planners (the human itself is
            always scored without it).
        traffic: "log" or "idm".
        progress: tqdm progress bar on stderr.
        default_speed_limit: PDM-Closed's target speed (m/s) on lanes without a speed limit (NAVSIM: 15 m/s; none
            of the real samples has speed limits, so this sets the EP normaliser's pace).
        agent_forecast: what PDM-Closed's leader search sees ("log" or "constant_velocity", see PDMClosedConfig).
    """
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import ConstantVelocityPlanner, HumanPlanner, PDMClosedConfig, PDMClosedPlanner

    pdm = PDMClosedPlanner(PDMClosedConfig(traffic=traffic, default_speed_limit=default_speed_limit,
                                           agent_forecast=agent_forecast))
    by_name = {"human": HumanPlanner(), "constant_velocity": ConstantVelocityPlanner(), "pdm_closed": pdm}
    for name in planners:
        if name not in by_name:
            raise ValueError(f"unknown planner {name!r}; choose from {PLANNER_NAMES}")
    out = CheckResult(seconds={name: 0.0 for name in planners})
    iterator: Iterable = scenes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(scenes, desc="check-scorer", unit="scene", file=sys.stderr)
    for source, scene in iterator:
        out.counts[source] = out.counts.get(source, 0) + 1
        ctx = pdm.context(scene)
        t = time.perf_counter()
        reference = pdm.run(scene, ctx).reference_progress
        out.seconds.setdefault("pdm_reference", 0.0)
        out.seconds["pdm_reference"] += time.perf_counter() - t
        for name in planners:
            t = time.perf_counter()
            plan = by_name[name].plan(scene)
            result = score_plans(scene, plan, human_filter=human_filter and name != "human", traffic=traffic,
                                 reference_progress=reference, context=ctx)
            out.seconds[name] += time.perf_counter() - t
            row = {"token": scene.token, "source": source, "log": scene.metadata.log_name, "planner": name}
            row.update(result.take(0))
            row["progress_m"] = float(result.progress[0])
            row["reference_progress_m"] = reference
            if row["epdms"] < 1.0:
                row["explain"] = result.explain(0)
            out.rows.append(row)
    out.table = aggregate(out.rows)
    return out


def aggregate(rows: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """planner -> source (and 'all') -> column -> mean over the rows."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    planners = list(dict.fromkeys(r["planner"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows)) + ["all"]
    for name in planners:
        table[name] = {}
        for source in sources:
            sel = [r for r in rows if r["planner"] == name and (source == "all" or r["source"] == source)]
            if sel:
                table[name][source] = {c: float(np.mean([r[c] for r in sel])) for c in COLUMNS}
    return table


def format_table(result: CheckResult) -> str:
    """The table as fixed-width text: one line per (planner, source)."""
    w = max([9] + [len(s) for s in result.counts])
    head = f"{'planner':<18} {'source':<{w}} {'n':>4} " + " ".join(f"{c.upper():>6}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, per_source in result.table.items():
        for source, cols in per_source.items():
            n = sum(result.counts.values()) if source == "all" else result.counts.get(source, 0)
            lines.append(f"{name:<18} {source:<{w}} {n:>4} " + " ".join(f"{cols[c]:6.3f}" for c in COLUMNS))
    return "\n".join(lines)
