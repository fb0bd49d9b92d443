"""Evaluate agents on a fixed scene list with the rule-based scorer: :func:`run_leaderboard`.

Work is split by scene: one task = one stage-1 scene (and, two-stage, its stage-2 scenes) x every agent. Each task
seeds numpy / torch / random from ``(seed, scene index)`` and every worker process runs torch on one thread, so the
records, hence the table, do not depend on the number of workers or the backend. Scoring follows NAVSIM v2: EP
normalised by PDM-Closed's progress (same traffic mode), human false-positive filter on, no EC (single frame).

An agent that raises (or returns a malformed plan) inside ``plan`` gets 0 for every score of that scene; the error
is counted and its first messages kept; the run goes on. A worker process that dies (segfault, OOM kill) marks the
scene it held as failed for every agent and is replaced; the run goes on. A run with ``out`` first removes the
previous run's leaderboard files there and writes the new ones (each atomically) at the end.
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from irlvla_gym.agents import Agent, check_plan, load_agent
from irlvla_gym.configs import count_or_all, option
from irlvla_gym.leaderboard.report import config_dict, summarise, write_outputs
from irlvla_gym.leaderboard.two_stage import DEFAULT_PERTURBATIONS, StartPerturbation, stage_two_scenes
from irlvla_gym.metrics.config import SUB_SCORES

SCORE_NAMES = ("epdms", "pdms") + SUB_SCORES
"""Per-plan numbers recorded for every (agent, scene)."""
BACKENDS = ("local", "ray")


class MissingExtraError(ImportError):
    """An optional dependency (an extra of irlvla-gym) is not installed."""


@dataclass
class LeaderboardConfig:
    """Settings of one leaderboard run (each field is the ``irlvla leaderboard`` flag of the same name, except
    ``perturbations`` and ``max_error_messages``; :mod:`irlvla_gym.configs`)."""

    split: str = "synthetic-test"
    """synthetic split or scene-store directory (with ``scenes`` given: only the label of the run)"""
    scenes: Any = option(None, cli=False)
    """Python only: the scenes to evaluate instead of ``split``'s, anything
    :class:`~irlvla_gym.scenes.source.SceneSource` takes (a list of Scene, a SceneStore, a SceneSource or a
    store path), e.g. real windows converted in memory; ``num_scenes`` still takes the first N"""
    agents: Sequence[Any] = option(("human", "constant-velocity", "stand-still", "pdm-closed", "bc_default"),
                                   nargs="+", type=str)
    """agent specs (irlvla_gym.agents.load_agent: built-in or plug-in names, trained models: a training run's
    model.zip or run directory, package.module:attr) or, in Python, Agent instances"""
    num_scenes: int | None = option(100, type=count_or_all)
    """evaluate the first N scenes of the split (0 on the command line, None in Python: all)"""
    two_stage: bool = False
    """NAVSIM v2 two-stage pseudo-simulation (stage-2 scenes around the stage-1 endpoints)"""
    perturbations: tuple[StartPerturbation, ...] = option(DEFAULT_PERTURBATIONS, cli=False)
    """stage-2 start perturbations (two-stage only)"""
    backend: Literal["local", "ray"] = "local"
    """local processes or Ray"""
    workers: int = 1
    """parallel workers (1 = in this process)"""
    seed: int = 0
    """base seed of the per-scene tasks; scene i's task is seeded from (seed, i)"""
    traffic: Literal["log", "idm"] = "log"
    """agents: log replay (non-reactive) or reactive IDM"""
    human_filter: bool = True
    """NAVSIM v2's human false-positive filter"""
    out: Path | None = None
    """output directory for leaderboard.md / .csv / .json (command line default: runs/leaderboard/<split>[-two-stage];
    None in Python: write nothing)"""
    progress: bool = True
    """progress bar on stderr"""
    max_error_messages: int = option(3, cli=False)
    """error messages kept per agent"""
    trust_pickle: bool = False
    """allow SB3 model .zip agents: SB3's load unpickles parts of the zip, which can run any code stored in it (only
    for files you trust like code; also IRLVLA_TRUST_PICKLE=1)"""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.traffic not in ("log", "idm"):
            raise ValueError(f"traffic must be 'log' or 'idm', got {self.traffic!r}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.num_scenes is not None and self.num_scenes < 1:
            raise ValueError("num_scenes must be >= 1 (or None for the whole split)")
        if not len(self.agents):
            raise ValueError("give at least one agent")


# --------------------------------------------------------------------------------------------------------------------
# Worker side: one scene, every agent
# --------------------------------------------------------------------------------------------------------------------


def unique_names(agents: Sequence[Agent]) -> list[str]:
    """Agent names made unique in order (``name``, ``name#2``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for agent in agents:
        base = str(getattr(agent, "name", type(agent).__name__))
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


def _zero_scores() -> dict[str, float]:
    return {name: 0.0 for name in SCORE_NAMES}


def _error_text(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


class SceneEvaluator:
    """Holds the agents and caches of one worker and evaluates scene tasks (see :meth:`evaluate`)."""

    def __init__(self, config: LeaderboardConfig, agents: Sequence[Any] | None = None):
        from irlvla_gym.scenes.source import SceneSource
        from irlvla_gym.planners import default_planner
        from irlvla_gym.utils import limit_torch_threads

        limit_torch_threads(1)
        self.config = config
        self.agents: list[Agent] = [load_agent(a, trust_pickle=config.trust_pickle)
                                    for a in (agents if agents is not None else config.agents)]
        self.names = unique_names(self.agents)
        self.source = scene_source(config)
        self.reference = default_planner(config.traffic)
        self._builders: dict[tuple, Any] = {}

    # ---- observations -------------------------------------------------------------------------------------------

    def _builder(self, agent: Agent):
        from irlvla_gym.obs.config import ObsConfig
        from irlvla_gym.obs.registry import ObservationBuilder

        cfg = ObsConfig.from_dict(getattr(agent, "obs_config", None))
        key = (tuple(agent.obs_keys), cfg)
        if key not in self._builders:
            self._builders[key] = ObservationBuilder(key[0], cfg)
        return key, self._builders[key]

    def _observation(self, agent: Agent, scene, cache: dict) -> dict[str, np.ndarray]:
        if not tuple(agent.obs_keys):
            return {}
        key, builder = self._builder(agent)
        if key not in cache:
            cache[key] = builder.observe(scene)
        return {k: v.copy() for k, v in cache[key].items()}

    # ---- planning and scoring -----------------------------------------------------------------------------------

    def _plans(self, scenes: Sequence[Any]) -> tuple[list[list], list[list], list[float]]:
        """Every agent's plans of ``scenes``: ``plans[a][s]`` ((8, 3), or None where it failed), ``errors[a][s]``
        (the error text or None) and ``seconds[a]`` spent in observation + planning. Agents with ``plan_batch`` get
        all scenes in one call; if that raises, each scene is planned alone so errors are attributed per scene."""
        caches: list[dict] = [{} for _ in scenes]
        plans: list[list] = []
        errors: list[list] = []
        seconds: list[float] = []
        for agent in self.agents:
            t = time.perf_counter()
            agent_plans: list = [None] * len(scenes)
            agent_errors: list = [None] * len(scenes)
            batched = False
            if len(scenes) > 1 and callable(getattr(agent, "plan_batch", None)):
                try:
                    obs = [self._observation(agent, sc, c) for sc, c in zip(scenes, caches)]
                    stacked = {k: np.stack([o[k] for o in obs]) for k in obs[0]} if obs[0] else {}
                    out = np.asarray(agent.plan_batch(stacked, list(scenes)), np.float64)
                    agent_plans = [check_plan(p) for p in out.reshape(len(scenes), *out.shape[1:])]
                    batched = True
                except Exception:  # noqa: BLE001 - retry one scene at a time to attribute the error
                    agent_plans = [None] * len(scenes)
            if not batched:
                for s, (sc, c) in enumerate(zip(scenes, caches)):
                    try:
                        agent_plans[s] = check_plan(agent.plan(self._observation(agent, sc, c), sc))
                    except Exception as exc:  # noqa: BLE001 - the agent's failure scores 0, is recorded, run goes on
                        agent_errors[s] = _error_text(exc)
            plans.append(agent_plans)
            errors.append(agent_errors)
            seconds.append(time.perf_counter() - t)
        return plans, errors, seconds

    def _score(self, scene, plans: list[np.ndarray | None]) -> list[dict[str, float]]:
        """Scores of the given plans in one batch (EP normalised by PDM-Closed); zeros where the plan is None."""
        from irlvla_gym.metrics import score_plans

        ok = [i for i, p in enumerate(plans) if p is not None]
        out = [_zero_scores() for _ in plans]
        if not ok:
            return out
        ctx = self.reference.context(scene)
        reference = self.reference.run(scene, ctx).reference_progress
        result = score_plans(scene, np.stack([plans[i] for i in ok]), human_filter=self.config.human_filter,
                             traffic=self.config.traffic, reference_progress=reference, context=ctx)
        for k, i in enumerate(ok):
            out[i] = result.take(k)
        return out

    def evaluate(self, index: int) -> dict[str, Any]:
        """The record of scene ``index``: per agent its scores, error, plan endpoint and planning seconds (and the
        stage-2 scenes' in two-stage mode). JSON-serialisable."""
        cfg = self.config
        task_seed = (int(cfg.seed) * 1_000_003 + int(index)) % (2**32)
        np.random.seed(task_seed)
        random.seed(task_seed)
        if "torch" in sys.modules:
            sys.modules["torch"].manual_seed(task_seed)
        record: dict[str, Any] = {"index": int(index), "token": None, "scene_error": None, "agents": {}}
        try:
            scene = self.source.load(index)
            record["token"] = scene.token
            self.reference.run(scene, self.reference.context(scene))
            stage2 = stage_two_scenes(scene, cfg.perturbations, self.reference) if cfg.two_stage else []
        except Exception as exc:  # noqa: BLE001 - a scene that cannot be prepared scores 0 for everyone
            record["scene_error"] = _error_text(exc)
            for name in self.names:
                record["agents"][name] = {"scores": _zero_scores(), "error": None, "endpoint": [0.0, 0.0],
                                          "plan_seconds": 0.0, "stage2": []}
            return record
        plans, errors, seconds = self._plans([scene])
        scores = self._score(scene, [p[0] for p in plans])
        for a, name in enumerate(self.names):
            plan = plans[a][0]
            end = plan[-1, :2] if plan is not None else np.zeros(2)
            record["agents"][name] = {"scores": scores[a], "error": errors[a][0],
                                      "endpoint": [float(end[0]), float(end[1])], "plan_seconds": seconds[a],
                                      "stage2": []}
        if stage2:
            plans2, errors2, seconds2 = self._plans([s2.scene for s2 in stage2])
            for a, name in enumerate(self.names):
                record["agents"][name]["plan_seconds"] += seconds2[a]
            for s, s2 in enumerate(stage2):
                scores2 = self._score(s2.scene, [p[s] for p in plans2])
                for a, name in enumerate(self.names):
                    record["agents"][name]["stage2"].append({
                        "token": s2.scene.token, "perturbation": s2.perturbation.name,
                        "start": [float(s2.start[0]), float(s2.start[1])], "scores": scores2[a],
                        "error": errors2[a][s]})
        return record


def worker_died_record(index: int, names: Sequence[str], why: str) -> dict[str, Any]:
    """The record of a scene whose worker process died (segfault, OOM kill, ``os._exit``) while evaluating it: every
    agent gets 0 and the error ``why`` (which agent crashed the process cannot be known)."""
    return {"index": int(index), "token": None, "scene_error": why,
            "agents": {name: {"scores": _zero_scores(), "error": why, "endpoint": [0.0, 0.0], "plan_seconds": 0.0,
                              "stage2": []} for name in names}}


def _worker_loop(config: LeaderboardConfig, agents: Sequence[Any] | None, tasks: Any, results: Any) -> None:
    """A local worker process: evaluate the scene indices of ``tasks`` until None; ``(index, record)`` to
    ``results``. A failing set-up is reported as ``(None, error text)`` (the driver stops the run with it)."""
    try:
        evaluator = SceneEvaluator(config, agents)
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which raises it
        results.put((None, _error_text(exc)))
        return
    while (index := tasks.get()) is not None:
        results.put((index, evaluator.evaluate(index)))


class _LocalPool:
    """Worker processes with one task in flight each, so a worker that dies is noticed (its process is gone, its
    result never comes) and its scene is marked failed instead of waited for forever; a replacement is started."""

    POLL_S = 0.5
    """seconds between liveness checks while no result arrives"""

    def __init__(self, config: LeaderboardConfig, agents: Sequence[Any] | None, names: Sequence[str], n: int):
        import multiprocessing as mp

        methods = mp.get_all_start_methods()
        self.ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self.config, self.agents, self.names = config, agents, list(names)
        self.results = self.ctx.Queue()
        self.workers: list[list] = [self._spawn() for _ in range(n)]  # [process, task queue, index or None]

    def _spawn(self) -> list:
        tasks = self.ctx.SimpleQueue()
        proc = self.ctx.Process(target=_worker_loop, args=(self.config, self.agents, tasks, self.results),
                                daemon=True)
        proc.start()
        return [proc, tasks, None]

    def _reap(self, done: dict[int, dict]) -> None:
        """Replace dead workers; the scene a dead one held gets a :func:`worker_died_record`."""
        for w, (proc, _, index) in enumerate(self.workers):
            if proc.is_alive():
                continue
            if index is not None:
                why = f"worker process died (exit code {proc.exitcode}) while evaluating scene {index}"
                done[index] = worker_died_record(index, self.names, why)
            self.workers[w] = self._spawn()

    def run(self, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
        """Records of ``indices`` in scene order, as they complete."""
        import queue

        todo, done, nxt = list(indices)[::-1], {}, 0
        try:
            while nxt < len(indices):
                for worker in self.workers:
                    if worker[2] is None and todo:
                        worker[2] = todo.pop()
                        worker[1].put(worker[2])
                try:
                    index, record = self.results.get(timeout=self.POLL_S)
                except queue.Empty:
                    self._reap(done)
                else:
                    if index is None:
                        raise RuntimeError(f"leaderboard worker could not start: {record}")
                    done[index] = record
                for worker in self.workers:
                    if worker[2] in done:
                        worker[2] = None
                while nxt < len(indices) and indices[nxt] in done:
                    yield done.pop(indices[nxt])
                    nxt += 1
        finally:
            self.close()

    def close(self) -> None:
        for proc, tasks, _ in self.workers:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)


# --------------------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------------------


def _local_records(config: LeaderboardConfig, agents: Sequence[Any] | None, indices: Sequence[int],
                   names: Sequence[str]) -> Iterator[dict[str, Any]]:
    if config.workers == 1 or len(indices) == 1:
        evaluator = SceneEvaluator(config, agents)
        for i in indices:
            yield evaluator.evaluate(i)
        return
    yield from _LocalPool(config, agents, names, min(config.workers, len(indices))).run(list(indices))


def import_ray():
    """``import ray`` or a :class:`MissingExtraError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("--backend ray needs Ray, which is not installed: pip install 'irlvla-gym[ray]' "
                                f"({exc})") from exc
    return ray


RAY_ACTOR_RESTARTS = 4
"""Restarts of a Ray evaluator actor whose process died; its queued scenes are retried on the restarted actor."""


def _ray_records(config: LeaderboardConfig, agents: Sequence[Any] | None, indices: Sequence[int],
                 names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Ray actors (one :class:`SceneEvaluator` each) on the running cluster, or a local instance started with
    ``num_cpus = workers`` when none is connected. Results come back in scene order. An actor whose process dies is
    restarted (:data:`RAY_ACTOR_RESTARTS`) and its tasks retried once; a scene that still fails gets a
    :func:`worker_died_record`, so one crash never loses the other scenes' results."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(num_cpus=config.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    from ray.exceptions import RayError

    Remote = ray.remote(num_cpus=1, max_restarts=RAY_ACTOR_RESTARTS, max_task_retries=1)(_RayEvaluator)
    actors = [Remote.remote(config, agents) for _ in range(min(config.workers, len(indices)))]
    futures = [actors[k % len(actors)].evaluate.remote(i) for k, i in enumerate(indices)]
    try:
        for index, future in zip(indices, futures):
            try:
                yield ray.get(future)
            except RayError as exc:  # the actor died on this scene (or could not be restarted)
                yield worker_died_record(index, names, f"Ray worker failed on scene {index}: "
                                                       f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        for actor in actors:
            ray.kill(actor)


class _RayEvaluator:
    """Ray actor wrapper of :class:`SceneEvaluator` (a plain class; made remote in :func:`_ray_records`)."""

    def __init__(self, config: LeaderboardConfig, agents: Sequence[Any] | None):
        self.evaluator = SceneEvaluator(config, agents)

    def evaluate(self, index: int) -> dict[str, Any]:
        return self.evaluator.evaluate(index)


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LeaderboardResult:
    """A finished run.

    Attributes:
        rows: one summary row per agent (:func:`irlvla_gym.leaderboard.report.summarise`), table order.
        records: per-scene records (:meth:`SceneEvaluator.evaluate`), scene order.
        config: the settings. wall_seconds: duration of the whole run. paths: files written (by kind).
    """

    rows: list[dict[str, Any]]
    records: list[dict[str, Any]]
    config: LeaderboardConfig
    wall_seconds: float
    paths: dict[str, Path] = field(default_factory=dict)


def scene_source(config: LeaderboardConfig) -> Any:
    """The :class:`~irlvla_gym.scenes.source.SceneSource` of a run: ``config.scenes`` when given, else
    ``config.split``."""
    from irlvla_gym.scenes.source import SceneSource

    if isinstance(config.scenes, SceneSource):
        return config.scenes
    return SceneSource(config.scenes if config.scenes is not None else config.split)


def scene_indices(config: LeaderboardConfig) -> list[int]:
    """The fixed scene list: the first ``num_scenes`` of the split (or of ``config.scenes``)."""
    total = len(scene_source(config))
    n = total if config.num_scenes is None else min(config.num_scenes, total)
    return list(range(n))


def run_leaderboard(config: LeaderboardConfig) -> LeaderboardResult:
    """Evaluate ``config.agents`` on the first ``config.num_scenes`` scenes and (with ``config.out``) write
    leaderboard.md / leaderboard.csv / leaderboard.json. Agent specs are resolved here first, so a bad spec fails
    before any work starts."""

    t0 = time.perf_counter()
    # Fail fast on bad specs; names for the table.
    resolved = [load_agent(a, trust_pickle=config.trust_pickle) for a in config.agents]
    names = unique_names(resolved)
    # Strings are re-resolved inside each worker; instances travel (fork) or are pickled (spawn / Ray).
    agents = [a if isinstance(a, str) else r for a, r in zip(config.agents, resolved)]
    indices = scene_indices(config)
    records_iter = (_ray_records if config.backend == "ray" else _local_records)(config, agents, indices, names)
    if config.progress:
        from tqdm import tqdm

        stage = "two-stage" if config.two_stage else "one-stage"
        records_iter = tqdm(records_iter, total=len(indices), desc=f"leaderboard {config.split} ({stage})",
                            unit="scene", file=sys.stderr)
    if config.out is not None:
        clear_outputs(Path(config.out))
    records = list(records_iter)
    rows = summarise(records, names, two_stage=config.two_stage, max_messages=config.max_error_messages)
    result = LeaderboardResult(rows, records, config, time.perf_counter() - t0)
    if config.out is not None:
        result.paths = write_outputs(result, Path(config.out))
    return result


OUTPUT_NAMES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")
"""The files a run writes into ``out`` (each replaced atomically at the end of the run)."""


def clear_outputs(out: Path) -> None:
    """Remove a previous run's outputs from ``out`` before this run starts, so that files of an old run are never
    left looking current if this one fails or is interrupted."""
    for name in OUTPUT_NAMES:
        (Path(out) / name).unlink(missing_ok=True)


__all__ = [
    "BACKENDS", "LeaderboardConfig", "LeaderboardResult", "MissingExtraError", "OUTPUT_NAMES", "RAY_ACTOR_RESTARTS",
    "SCORE_NAMES", "SceneEvaluator", "clear_outputs", "config_dict", "import_ray", "run_leaderboard", "scene_indices",
    "scene_source", "unique_names", "worker_died_record",
]
