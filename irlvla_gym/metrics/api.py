"""End-to-end entry points: :func:`score_plans` (scene + plans) and :func:`score_states` (already simulated).

Pipeline (navsim/evaluate/pdm_score.py ``pdm_score``): plans -> LQR/bicycle simulation (``irlvla_gym.sim``) ->
agents (log replay, or reactive IDM) -> sub-scores (the vectorised implementation, or the shapely reference) -> EP
normalisation, human false-positive filter, EPDMS (:func:`irlvla_gym.metrics.result.finalize`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from irlvla_gym.metrics.config import DEFAULT_CONFIG, ScorerConfig
from irlvla_gym.metrics.context import AgentTracks, ScoringContext, prepare_scene
from irlvla_gym.metrics.result import ScoreResult, finalize
from irlvla_gym.scenes.scene import Scene

Impl = Literal["fast", "reference"]
"""``"fast"``: the vectorised scorer (:func:`irlvla_gym.metrics.vectorised.score_scene`, the one the multi-scene
:func:`~irlvla_gym.metrics.vectorised.score_rows` runs too); ``"reference"``: the shapely spec."""


def _implementation(impl: Impl):
    if impl == "fast":
        from irlvla_gym.metrics.vectorised import score_scene

        return score_scene
    if impl == "reference":
        from irlvla_gym.metrics.reference import score_states_reference

        return score_states_reference
    raise ValueError(f"impl must be 'fast' or 'reference', got {impl!r}")


def score_states(ctx: ScoringContext, states: np.ndarray, agents: AgentTracks, *,
                 previous_states: np.ndarray | None = None, human_states: np.ndarray | None = None,
                 human_agents: AgentTracks | None = None, reference_progress: float | None = None,
                 impl: Impl = "fast") -> ScoreResult:
    """Score already simulated ego states.

    Args:
        ctx: :func:`prepare_scene` output.
        states: (K, 41, 11) simulated ego states (``irlvla_gym.sim.StateIndex`` columns).
        agents: agents over the same 41 steps.
        previous_states: (K or 1, 41, 11) simulated states of the plan made 0.5 s earlier, in this scene's frame;
            None drops EC (EPDMS divisor 14).
        human_states: (1, 41, 11) simulated expert trajectory for the human false-positive filter; None: no filter.
        human_agents: agents as they react to the human trajectory (reactive traffic); None: ``agents``.
        reference_progress: PDM-Closed's progress x its multiplicative product (m); None: the batch's best.
        impl: "fast" (vectorised) or "reference" (shapely loops).

    Returns:
        The finalised :class:`ScoreResult` over the K plans.
    """
    states = np.asarray(states, np.float64)
    if states.ndim != 3 or states.shape[1:] != (ctx.config.num_states, 11):
        raise ValueError(f"states must be (K, {ctx.config.num_states}, 11), got {states.shape}")
    run = _implementation(impl)
    human = None
    K = len(states)
    if human_states is not None:
        human_states = np.asarray(human_states, np.float64).reshape(1, *states.shape[1:])
    if human_states is not None and human_agents is None and agents.boxes.ndim == 3 and previous_states is None:
        # Shared agents: score the human as one more row of the same batch (one vectorised pass, not two).
        both = run(ctx, np.concatenate([states, human_states]), agents, None)
        result, human = _split(both, K)
    else:
        result = run(ctx, states, agents, previous_states)
        if human_states is not None:
            human = run(ctx, human_states, human_agents if human_agents is not None else agents, None)
    return finalize(result, ctx.config, reference_progress=reference_progress, human=human)


def _split(result: ScoreResult, K: int) -> tuple[ScoreResult, ScoreResult]:
    """Split a (K + 1)-row result into the first K rows and the last one (per-plan arrays only)."""
    head, tail = {}, {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == K + 1:
            head[f.name], tail[f.name] = value[:K], value[K:]
    return dataclasses.replace(result, **head), dataclasses.replace(result, **tail)


def agent_tracks(scene: Scene, traffic: str = "log", states: np.ndarray | None = None) -> AgentTracks:
    """Agents over the 41 simulation steps.

    ``traffic="log"``: non-reactive log replay (``irlvla_gym.sim.log_replay``), shared by all plans.
    ``traffic="idm"``: reactive IDM agents (``irlvla_gym.sim.simulate_idm_agents``) reacting to each plan's
    ``states`` (K, 41, 11): boxes (K, 41, N, 8).
    """
    from irlvla_gym import sim

    if traffic == "log":
        track = sim.log_replay(scene)
    elif traffic in ("idm", "reactive"):
        track = sim.simulate_idm_agents(scene, states)
    else:
        raise ValueError(f"traffic must be 'log' or 'idm', got {traffic!r}")
    return AgentTracks(np.asarray(track.boxes, np.float64), np.asarray(track.valid, bool),
                       np.asarray(track.category, np.int64))


def previous_plan_states(scene: Scene, previous_plans: np.ndarray) -> np.ndarray:
    """Simulate plans made 0.5 s earlier, given in the ego frame at t = -0.5 s, into this scene's frame.

    The start state is the logged ego at t = -0.5 s (pose ``history[-2]``, its velocity and acceleration).

    Returns:
        (K, 41, 11) states in the t0 ego frame (t = -0.5 .. 3.5 s).
    """
    from irlvla_gym.scenes.geometry import to_global
    from irlvla_gym.sim import simulate_plans

    plans = np.asarray(previous_plans, np.float64)
    plans = plans[None] if plans.ndim == 2 else plans
    pose = scene.ego.history[-2]
    world = np.empty_like(plans)
    world[..., :2] = to_global(plans[..., :2], pose[:2], float(pose[2]))
    world[..., 2] = (plans[..., 2] + pose[2] + np.pi) % (2 * np.pi) - np.pi
    start = np.zeros(11)
    start[:3] = pose
    start[3:5] = scene.ego.history_velocity[-2]
    start[5:7] = scene.ego.history_acceleration[-2]
    start = np.broadcast_to(start, (len(plans), 11))
    return simulate_plans(start, world)


def score_plans(scene: Scene, plans: np.ndarray, *, previous_plans: np.ndarray | None = None,
                human_filter: bool = True, traffic: str = "log", reference_progress: float | None = None,
                impl: Impl = "fast", context: ScoringContext | None = None,
                config: ScorerConfig = DEFAULT_CONFIG) -> ScoreResult:
    """Simulate and score K plans in one scene.

    Args:
        scene: the scene.
        plans: (K, 8, 3) or (8, 3) poses [x, y, yaw] at t = 0.5 .. 4 s in the t0 ego frame (rear axle).
        previous_plans: (K or 1, 8, 3) plans made 0.5 s earlier, in the ego frame at t = -0.5 s; enables EC.
        human_filter: score the logged expert future too and neutralise sub-scores it fails (NAVSIM v2 default).
        traffic: "log" (non-reactive replay) or "idm".
        reference_progress: PDM-Closed's progress x product (m); None normalises EP over the batch.
        impl: "fast" or "reference".
        context: a cached :func:`prepare_scene` result for this scene (built when None).
        config: thresholds.

    Returns:
        :class:`ScoreResult` over the K plans.
    """
    from irlvla_gym.sim import simulate_plans

    plans = np.asarray(plans, np.float64)
    plans = plans[None] if plans.ndim == 2 else plans
    ctx = context if context is not None else prepare_scene(scene, config)
    states = simulate_plans(scene, plans)
    agents = agent_tracks(scene, traffic, states)
    human = simulate_plans(scene, scene.ego.future[None]) if human_filter else None
    # Reactive agents react to the human trajectory too, so it gets its own agents.
    human_agents = agent_tracks(scene, traffic, human) if human is not None and traffic != "log" else None
    previous = previous_plan_states(scene, previous_plans) if previous_plans is not None else None
    return score_states(ctx, states, agents, previous_states=previous, human_states=human, human_agents=human_agents,
                        reference_progress=reference_progress, impl=impl)
