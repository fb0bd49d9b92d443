"""Native vector envs: N scenes stepped with one batched call into the tracker, the scorer and the renderer.

``gym.make_vec("IRLVLA-Navsim-v2", num_envs=N, vectorization_mode="vector_entry_point")`` gives
:class:`NavsimVectorEnv`, ``gym.make_vec("IRLVLA-Navsim-ClosedLoop-v2", ...)`` gives
:class:`NavsimClosedLoopVectorEnv` (keyword arguments as the single envs', plus ``autoreset_mode``).

Why: gymnasium's SyncVectorEnv and SB3's DummyVecEnv step N envs one at a time, paying the fixed cost of a tracker
call (~0.4 ms) and a scorer call (~1 ms) N times; process-based vectorisation adds pickling and IPC per step. Here
one vector step makes

* one :func:`irlvla_gym.sim.simulate_plans` call for the N plans (the fused tracker: Python floats up to 16 plans,
  numpy arrays beyond; a plan's states are bit-identical alone or in a batch);
* one :func:`irlvla_gym.metrics.multi.score_rows` call for the N (scene, plan) rows (map queries once per distinct
  scene, agents packed over rows);
* one :meth:`~irlvla_gym.obs.registry.ObservationBuilder.observe_batch` call for the observations that need
  rendering (plan-once: only scenes seen for the first time; closed loop: every env past t0), gathered into the
  (N, ...) arrays with one copy.

All N envs share one scene source, one per-scene precompute cache (:func:`irlvla_gym.envs.scenes.shared_lru`), one
observation builder and one action decoder; each env keeps only its RNG and episode state.

**Same numbers as N single envs.** With the same seeds (``reset(seed=s)`` seeds env i with ``s + i``, a list seeds
each env) the observations, rewards, terminations, truncations and infos equal those of
``gymnasium.vector.SyncVectorEnv`` over N single envs with the same ``autoreset_mode`` (tests/envs/
test_vector_native.py), including the autoreset infos. The only differences: ``infos["final_obs"]`` entries of the
plan-once env are the scene's cached read-only arrays (not copies), and a custom reward callable is called once per
env (not batched: a learned model may round differently in a batch).

**Autoreset** (``metadata["autoreset_mode"]``, https://farama.org/Vector-Autoreset-Mode): ``SAME_STEP`` by
default: an env whose episode ended is reset within the same ``step``; the returned observation is the new
episode's, ``infos["final_obs"]`` / ``infos["final_info"]`` (masks ``_final_obs`` / ``_final_info``) hold the
finished step's, and the reset info is merged into ``infos``. This is SB3's VecEnv convention (the adapter
:class:`irlvla_gym.envs.sb3.BatchedVecEnv` needs it) and the only sensible one for the plan-once env, whose every
step ends an episode (with NEXT_STEP every other vector step would be spent on resets). ``autoreset_mode=
gym.vector.AutoresetMode.NEXT_STEP`` (gymnasium's default; needed by e.g. ``VectorObservationWrapper``) and
``DISABLED`` (reset ended envs yourself with ``reset(options={"reset_mask": mask})``) are supported too.

Invalid actions (NaN/inf, bad index) never raise, as in the single envs: reward 0 and ``invalid_action`` in the
step info.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from irlvla_gym.plans.codec import Decoded, TrajectoryAction, action_to_plan
from irlvla_gym.envs.base import NavsimBaseEnv
from irlvla_gym.envs.closed_loop import HISTORY_ROWS, ROUTE_END_MARGIN, NavsimClosedLoopEnv
from irlvla_gym.envs.navsim_env import NavsimEnv
from irlvla_gym.envs.scoring import (
    MAX_REPLANS, NUM_STATES, STEPS_PER_REPLAN, SceneBundle, context_at, extend_track, route_remaining, scene_at,
    window, zero_scores,
)
from irlvla_gym.metrics import AgentTracks
from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.scenes.geometry import to_local
from irlvla_gym.scenes.scene import Agents, route_command, wrap_angle

# ---------------------------------------------------------------------------------------------------------------------
# Batched infos in gymnasium's layout (what VectorEnv._add_info builds one env at a time)
# ---------------------------------------------------------------------------------------------------------------------


class InfoBuilder:
    """Builds a vector-env info dict column by column, in the layout ``VectorEnv._add_info`` produces: every key
    holds an (N, ...) array (object arrays for strings and other objects, filled with None) with a boolean mask
    ``_key`` of the envs that have it; dict values nest.

    ``put(key, rows, values)`` writes the values of the envs ``rows``; the array type follows the first value, as
    in ``_add_info`` (Python float -> float64, int -> int64, bool -> bool, ndarray -> its dtype and shape).
    """

    def __init__(self, num_envs: int):
        self.n = num_envs
        self.data: dict[str, Any] = {}
        self.masks: dict[str, np.ndarray] = {}

    def _mark(self, key: str, rows: np.ndarray) -> None:
        mask = self.masks.get(key)
        if mask is None:
            mask = self.masks[key] = np.zeros(self.n, bool)
        mask[rows] = True

    def put(self, key: str, rows: np.ndarray, values: Sequence[Any] | np.ndarray) -> None:
        """Set ``key`` for the envs ``rows`` (a list of per-env values, or an array aligned with ``rows``)."""
        if len(rows) == 0:
            return
        array = self.data.get(key)
        if array is None:
            first = values[0]
            if isinstance(first, np.ndarray):
                array = np.zeros((self.n, *first.shape), first.dtype)
            elif type(first) in (int, float, bool) or isinstance(first, (np.number, np.bool_)):
                array = np.zeros(self.n, dtype=type(first))
            else:
                array = np.full(self.n, None, dtype=object)
            self.data[key] = array
        if array.dtype == object:
            for r, v in zip(rows, values):
                array[r] = v
        else:
            array[rows] = values
        self._mark(key, rows)

    def sub(self, key: str, rows: np.ndarray) -> "InfoBuilder":
        """The nested builder of dict-valued ``key`` (marked present for ``rows``)."""
        builder = self.data.get(key)
        if builder is None:
            builder = self.data[key] = InfoBuilder(self.n)
        self._mark(key, rows)
        return builder

    def build(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.data.items():
            out[key] = value.build() if isinstance(value, InfoBuilder) else value
            out[f"_{key}"] = self.masks[key]
        return out


def put_scores(builder: InfoBuilder, rows: np.ndarray, scores: Sequence[dict[str, float]]) -> None:
    """``info["rewards"]`` of the envs ``rows`` (per-env dicts whose keys may differ: invalid actions have no
    ``progress``, custom rewards only ``custom``)."""
    sub = builder.sub("rewards", rows)
    keys: dict[str, None] = {}
    for s in scores:
        keys.update(dict.fromkeys(s))
    for key in keys:
        have = [j for j, s in enumerate(scores) if key in s]
        sub.put(key, rows[have], np.array([scores[j][key] for j in have], np.float64))


def put_score_arrays(builder: InfoBuilder, rows: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """``info["rewards"]`` of envs ``rows`` that all have the full EPDMS set (one array per name)."""
    sub = builder.sub("rewards", rows)
    for key, values in arrays.items():
        sub.put(key, rows, np.asarray(values, np.float64))


# ---------------------------------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------------------------------


class _NavsimVectorBase(gym.vector.VectorEnv):
    """N envs of one id sharing a template env (source, caches, observation builder, action decoder)."""

    env_class: type[NavsimBaseEnv]

    def __init__(self, num_envs: int = 8, *, autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
                 **kwargs: Any):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        kwargs.pop("max_episode_steps", None)  # gym.make_vec passes the spec's (None for these ids)
        self.template = self.env_class(**kwargs)
        t = self.template
        self.num_envs = int(num_envs)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.render_mode = t.render_mode
        self.metadata = {**t.metadata, "autoreset_mode": self.autoreset_mode}
        self.single_observation_space = t.observation_space
        self.single_action_space = t.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.config = t.config
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._bundles: list[SceneBundle | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, bool)

    # ---- seeding and scene selection (exactly as NavsimBaseEnv.reset / _select_index) --------------------------

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random()
        return self._rngs[i]

    def _select(self, i: int, options: dict[str, Any] | None) -> int:
        options = options or {}
        source = self.template.source
        if options.get("scene_index") is not None:
            index = int(options["scene_index"])
            if not 0 <= index < len(source):
                raise IndexError(f"scene_index {index} out of range for {len(source)} scenes")
            return index
        if options.get("token") is not None:
            return source.index_of(str(options["token"]))
        return int(self._rng(i).integers(len(source)))

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        return seeds

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all envs, or those of ``options["reset_mask"]`` ((N,) bool). Seeds: None, int (env i gets
        ``seed + i``) or a list."""
        seeds = self._seeds(seed)
        options = dict(options) if options else {}
        mask = options.pop("reset_mask", None)
        if mask is None:
            rows = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a ({self.num_envs},) bool array with a True entry")
            rows = np.flatnonzero(mask)
        if seed is not None and seeds[0] is not None:
            self._np_random_seed = seeds[0]
        for i in rows:
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        self._autoreset[rows] = False
        infos = InfoBuilder(self.num_envs)
        self._reset_rows(rows, options or None, infos)
        return self._observations(), infos.build()

    def _reset_rows(self, rows: np.ndarray, options: dict[str, Any] | None, infos: InfoBuilder) -> None:
        raise NotImplementedError

    def _observations(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # ---- actions ------------------------------------------------------------------------------------------------

    def _decode(self, actions: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plans (M, 8, 3), invalid (M,), clipped (M,) of the actions of envs ``rows`` (as the single env decodes:
        vectorised for trajectory actions, element-wise the same operations)."""
        kind = self.template.action_kind
        if isinstance(kind, TrajectoryAction):
            try:
                a = np.asarray(actions, np.float64).reshape(self.num_envs, -1)[rows]
                ok = a.shape[1] == 24
            except (TypeError, ValueError):
                ok = False
            if ok:
                finite = np.isfinite(a)
                invalid = ~finite.all(axis=1)
                clipped = np.any(np.abs(a) > 1.0, axis=1) & ~invalid
                return action_to_plan(np.where(finite, a, 0.0)), invalid, clipped
        items = list(actions) if not isinstance(actions, np.ndarray) else actions
        decoded: list[Decoded] = [kind.decode(items[i]) for i in rows]
        return (np.stack([d.plan for d in decoded]) if decoded else np.zeros((0, 8, 3)),
                np.array([d.invalid for d in decoded], bool), np.array([d.clipped for d in decoded], bool))

    # ---- step skeleton --------------------------------------------------------------------------------------------

    def step(self, actions):
        N = self.num_envs
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset.copy()
        elif self.autoreset_mode == AutoresetMode.DISABLED:
            if self._autoreset.any():
                raise RuntimeError("autoreset_mode=DISABLED: reset the ended envs with "
                                   "reset(options={'reset_mask': mask}) before stepping them")
            resetting = np.zeros(N, bool)
        else:
            resetting = np.zeros(N, bool)
        stepping = np.flatnonzero(~resetting)
        rewards = np.zeros(N)
        terminations = np.zeros(N, bool)
        truncations = np.zeros(N, bool)
        infos = InfoBuilder(N)
        if len(stepping):
            step_infos = InfoBuilder(N) if self.autoreset_mode == AutoresetMode.SAME_STEP else infos
            self._step_rows(actions, stepping, rewards, terminations, truncations, step_infos)
            done = np.flatnonzero(terminations | truncations)
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                if len(done):
                    infos.put("final_obs", done, self._final_obs(done))
                    final = step_infos.build()
                    sub = infos.sub("final_info", done)
                    _copy_rows(final, sub, done)
                    self._reset_rows(done, None, infos)
                not_done = np.setdiff1d(stepping, done)
                if len(not_done):
                    _copy_rows(step_infos.build(), infos, not_done)
        if resetting.any():
            self._reset_rows(np.flatnonzero(resetting), None, infos)
        self._autoreset = terminations | truncations
        return self._observations(), rewards, terminations, truncations, infos.build()

    def _step_rows(self, actions: Any, rows: np.ndarray, rewards: np.ndarray, terminations: np.ndarray,
                   truncations: np.ndarray, infos: InfoBuilder) -> None:
        raise NotImplementedError

    def _final_obs(self, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def render(self):
        return None

    def close_extras(self, **kwargs: Any) -> None:
        self.template.close()


def _copy_rows(built: dict[str, Any], target: InfoBuilder, rows: np.ndarray) -> None:
    """Copy the entries of envs ``rows`` from a built info dict into ``target`` (keeps masks)."""
    for key, value in built.items():
        if key.startswith("_"):
            continue
        have = rows[built[f"_{key}"][rows]]
        if not len(have):
            continue
        if isinstance(value, dict):
            _copy_rows(value, target.sub(key, have), have)
        else:
            target.put(key, have, value[have] if value.dtype != object else [value[r] for r in have])


# ---------------------------------------------------------------------------------------------------------------------
# IRLVLA-Navsim-v2
# ---------------------------------------------------------------------------------------------------------------------


class NavsimVectorEnv(_NavsimVectorBase):
    """N ``IRLVLA-Navsim-v2`` envs stepped in one batch (see the module docs).

    Args:
        num_envs: N.
        autoreset_mode: SAME_STEP (default), NEXT_STEP or DISABLED.
        **kwargs: the env's arguments (:class:`~irlvla_gym.envs.config.EnvConfig`), shared by the N envs.

    Observations are built only when a scene is seen for the first time (one ``observe_batch`` call for all new
    scenes of a step) and gathered from the per-scene cache afterwards, so a reset costs a copy.
    """

    env_class = NavsimEnv

    def __init__(self, num_envs: int = 8, **kwargs: Any):
        super().__init__(num_envs, **kwargs)
        self._obs_rows: list[dict[str, np.ndarray] | None] = [None] * self.num_envs
        self._texts: list[str] = [""] * self.num_envs

    @property
    def envs_bundles(self) -> list[SceneBundle | None]:
        """The current scene precompute of each env."""
        return list(self._bundles)

    def _reset_rows(self, rows: np.ndarray, options: dict[str, Any] | None, infos: InfoBuilder) -> None:
        t = self.template
        indices = [self._select(i, options) for i in rows]
        bundles = [t.get_bundle(index) for index in indices]
        key = t._obs_key
        missing = {id(b): b for b in bundles if key not in b.extras}
        if missing:  # first visits: one batched render for all new scenes
            new = list(missing.values())
            batch = t.obs_builder.observe_batch([b.scene for b in new])
            for j, b in enumerate(new):
                obs = {k: v[j] for k, v in batch.items()}
                for v in obs.values():
                    v.setflags(write=False)
                b.extras[key] = (obs, t.obs_builder.instruction_text(b.scene))
        for i, b in zip(rows, bundles):
            self._bundles[i] = b
            self._obs_rows[i], self._texts[i] = b.extras[key]
        infos.put("token", rows, [b.scene.token for b in bundles])
        infos.put("scene_index", rows, indices)
        infos.put("instruction", rows, [self._texts[i] for i in rows])

    def _observations(self) -> dict[str, np.ndarray]:
        rows = self._obs_rows
        if any(r is None for r in rows):
            raise RuntimeError("call reset() first")
        return {k: np.stack([r[k] for r in rows]) for k in self.single_observation_space.spaces}

    def _final_obs(self, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [self._obs_rows[i] for i in rows]

    def _step_rows(self, actions: Any, rows: np.ndarray, rewards: np.ndarray, terminations: np.ndarray,
                   truncations: np.ndarray, infos: InfoBuilder) -> None:
        if any(self._bundles[i] is None for i in rows):
            raise RuntimeError("call reset() before step()")
        t = self.template
        plans, invalid, clipped = self._decode(actions, rows)
        bundles = [self._bundles[i] for i in rows]
        scores: list[dict[str, float] | None] = [None] * len(rows)
        reward_fn = t.reward_fn
        valid = np.flatnonzero(~invalid)
        for j in np.flatnonzero(invalid):
            scores[j] = zero_scores()
        if reward_fn is not None:
            for j in valid:  # one call per env: same numbers as the single env (see module docs)
                value = float(reward_fn(bundles[j].scene, plans[j]))
                rewards[rows[j]] = value
                scores[j] = {"custom": value}
        elif len(valid):
            final = self._score(bundles, plans, valid)
            rewards[rows[valid]] = final["epdms"]
            if len(valid) < len(rows):  # mixed with invalid actions (whose sub-scores lack "progress")
                names = list(final)
                columns = [final[n].tolist() for n in names]
                for pos, j in enumerate(valid):
                    scores[j] = {n: c[pos] for n, c in zip(names, columns)}
        terminations[rows] = True
        infos.put("token", rows, [b.scene.token for b in bundles])
        infos.put("scene_index", rows, [b.index for b in bundles])
        infos.put("instruction", rows, [self._texts[i] for i in rows])
        if reward_fn is None and len(valid) == len(rows):
            put_score_arrays(infos, rows, final)  # the common case: columns straight from the scorer
        else:
            put_scores(infos, rows, scores)
        infos.put("invalid_action", rows, invalid)
        infos.put("clipped_action", rows, clipped)
        infos.put("plan", rows, plans)

    def _score(self, bundles: list[SceneBundle], plans: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """EPDMS of ``plans[rows]`` in their scenes: one tracker call, one multi-scene scorer call."""
        from irlvla_gym.metrics import agent_tracks
        from irlvla_gym.metrics.multi import finalize_rows, human_zero_mask, score_rows
        from irlvla_gym.sim import simulate_plans

        bs = [bundles[j] for j in rows]
        states = simulate_plans(np.stack([b.start_state for b in bs]), plans[rows])
        if self.config.traffic == "log":
            agents = [b.log_agents for b in bs]
        else:
            agents = [agent_tracks(b.scene, "idm", states[j:j + 1]) for j, b in enumerate(bs)]
        contexts = [b.ctx for b in bs]
        raw, has_ec = score_rows(contexts, states, agents)
        cfg = contexts[0].config
        human = human_zero_mask([b.human_raw for b in bs], cfg) if self.config.human_filter else None
        return finalize_rows(raw, cfg, np.array([b.reference_progress for b in bs]), human, has_ec)


# ---------------------------------------------------------------------------------------------------------------------
# IRLVLA-Navsim-ClosedLoop-v2
# ---------------------------------------------------------------------------------------------------------------------


class NavsimClosedLoopVectorEnv(_NavsimVectorBase):
    """N ``IRLVLA-Navsim-ClosedLoop-v2`` envs stepped in one batch (see the module docs).

    Per vector step: one tracker call for the N plans (each from its env's current state), the IDM rollouts per env
    (``traffic="idm"``), one multi-scene scorer call with each env's time-shifted context, and one batched render of
    the N new observations. Arguments as :class:`NavsimVectorEnv`.
    """

    env_class = NavsimClosedLoopEnv

    def __init__(self, num_envs: int = 8, **kwargs: Any):
        super().__init__(num_envs, **kwargs)
        n = self.num_envs
        self._trace: list[np.ndarray | None] = [None] * n
        self._k = np.zeros(n, np.int64)
        self._prev: list[np.ndarray | None] = [None] * n
        self._boxes: list[np.ndarray | None] = [None] * n
        self._valid: list[np.ndarray | None] = [None] * n
        self._obs_scene: list[Any] = [None] * n
        self._obs_rows: list[dict[str, np.ndarray] | None] = [None] * n
        self._texts: list[str] = [""] * n

    def _tracks(self, b: SceneBundle) -> tuple[np.ndarray, np.ndarray]:
        if "log_ext" not in b.extras:
            b.extras["log_ext"] = extend_track(b.log_agents.boxes, b.log_agents.valid)
        return b.extras["log_ext"]

    def _reset_rows(self, rows: np.ndarray, options: dict[str, Any] | None, infos: InfoBuilder) -> None:
        t = self.template
        indices = [self._select(i, options) for i in rows]
        for i, index in zip(rows, indices):
            b = self._bundles[i] = t.get_bundle(index)
            self._trace[i] = np.vstack([b.ctx.history_states, b.start_state[None]])
            self._k[i] = 0
            self._prev[i] = None
            self._boxes[i], self._valid[i] = self._tracks(b)
            self._obs_scene[i] = None
            self._obs_rows[i], self._texts[i] = t.t0_observation(b)
        infos.put("token", rows, [self._bundles[i].scene.token for i in rows])
        infos.put("scene_index", rows, indices)
        infos.put("instruction", rows, [self._texts[i] for i in rows])
        infos.put("time", rows, [0.0] * len(rows))

    def _observations(self) -> dict[str, np.ndarray]:
        rows = self._obs_rows
        if any(r is None for r in rows):
            raise RuntimeError("call reset() first")
        return {k: np.stack([r[k] for r in rows]) for k in self.single_observation_space.spaces}

    def _final_obs(self, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [self._obs_rows[i] for i in rows]  # fresh arrays of this step's render; reset rebinds the slot

    def _window(self, i: int, step0: int) -> AgentTracks:
        """Agents of env i over the 41 steps from ``step0``; log replay windows are cached per scene and step, so
        the scorer's per-agent arrays are prepared once per (scene, replan)."""
        b = self._bundles[i]
        if self.config.traffic == "log":
            key = ("window", step0)
            if key not in b.extras:
                b.extras[key] = window(self._boxes[i], self._valid[i], b.log_agents.category, step0)
            return b.extras[key]
        return window(self._boxes[i], self._valid[i], b.log_agents.category, step0)

    def _step_rows(self, actions: Any, rows: np.ndarray, rewards: np.ndarray, terminations: np.ndarray,
                   truncations: np.ndarray, infos: InfoBuilder) -> None:
        from irlvla_gym.metrics.multi import finalize_rows, human_zero_mask, score_rows
        from irlvla_gym.sim import simulate_idm_agents, simulate_plans

        if any(self._bundles[i] is None for i in rows):
            raise RuntimeError("call reset() before step()")
        t = self.template
        M = len(rows)
        plans, invalid, clipped = self._decode(actions, rows)
        bundles = [self._bundles[i] for i in rows]
        current = np.stack([self._trace[i][-1] for i in rows])  # (M, 11)
        yaw = current[:, 2]
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        plan_world = np.empty_like(plans)  # to_global, row-wise
        plan_world[..., :2] = np.stack([c * plans[..., 0] - s * plans[..., 1], s * plans[..., 0] + c * plans[..., 1]],
                                       axis=-1) + current[:, None, :2]
        plan_world[..., 2] = wrap_angle(plans[..., 2] + yaw[:, None])
        states = simulate_plans(current, plan_world)  # (M, 41, 11): one tracker call
        step0 = self._k[rows] * STEPS_PER_REPLAN

        agents, contexts, previous = [], [], []
        for j, i in enumerate(rows):
            b = bundles[j]
            if self.config.traffic == "idm":
                ego_t0 = np.concatenate([self._trace[i][HISTORY_ROWS:], states[j, 1:]])[:NUM_STATES]
                track = simulate_idm_agents(b.scene, ego_t0[None])
                self._boxes[i], self._valid[i] = extend_track(track.boxes[0], track.valid[0])
            agents.append(self._window(i, int(step0[j])))
            contexts.append(context_at(b, int(step0[j]), self._trace[i][-HISTORY_ROWS - 1:-1]))
            previous.append(None if self._prev[i] is None else self._prev[i][0])
        raw, has_ec = score_rows(contexts, states, agents, previous)  # one scorer call
        cfg = contexts[0].config
        human = human_zero_mask([b.human_raw for b in bundles], cfg) if self.config.human_filter else None
        final = finalize_rows(raw, cfg, np.array([b.reference_progress for b in bundles]), human, has_ec)
        executed = slice(0, STEPS_PER_REPLAN + 1)
        collision = raw.at_fault_collision[:, executed].any(axis=1)
        off_road = raw.non_drivable[:, executed].any(axis=1)
        names = list(final)
        columns = [final[n].tolist() for n in names]
        scores: list[dict[str, float]] = []
        reward = np.zeros(M)
        for j, i in enumerate(rows):
            row_scores = {n: col[j] for n, col in zip(names, columns)}
            if invalid[j]:
                scores.append(zero_scores())
            elif t.reward_fn is not None:
                view = scene_at(bundles[j], int(step0[j]), self._trace[i], self._boxes[i], self._valid[i])
                reward[j] = float(t.reward_fn(view, plans[j]))
                scores.append({"custom": reward[j], **row_scores})
            else:
                reward[j] = row_scores["epdms"]
                scores.append(row_scores)

        end_of_log = np.zeros(M, bool)
        end_of_route = np.zeros(M, bool)
        samples = np.arange(9) * STEPS_PER_REPLAN
        for j, i in enumerate(rows):
            b = bundles[j]
            self._trace[i] = np.vstack([self._trace[i], states[j, 1:STEPS_PER_REPLAN + 1]])
            self._prev[i] = states[j:j + 1]
            self._k[i] += 1
            if self.config.traffic == "idm":
                ag = b.scene.agents
                self._obs_scene[i] = dataclasses.replace(
                    b.scene, agents=Agents(self._boxes[i][samples], self._valid[i][samples], ag.category,
                                           ag.track_id), validate=False)
            end_of_log[j] = self._k[i] >= MAX_REPLANS
            end_of_route[j] = route_remaining(b, self._trace[i][-1, :2]) < ROUTE_END_MARGIN
        terminated = collision | off_road
        truncated = (end_of_log | end_of_route) & ~terminated
        self._observe_rows(rows)

        rewards[rows] = reward
        terminations[rows] = terminated
        truncations[rows] = truncated
        infos.put("token", rows, [b.scene.token for b in bundles])
        infos.put("scene_index", rows, [b.index for b in bundles])
        infos.put("instruction", rows, [self._texts[i] for i in rows])
        put_scores(infos, rows, scores)
        infos.put("invalid_action", rows, invalid)
        infos.put("clipped_action", rows, clipped)
        infos.put("plan", rows, plans)
        infos.put("time", rows, [int(self._k[i]) * STEPS_PER_REPLAN * 0.1 for i in rows])
        infos.put("collision", rows, collision)
        infos.put("off_road", rows, off_road)
        infos.put("end_of_log", rows, end_of_log)
        infos.put("end_of_route", rows, end_of_route)

    def _observe_rows(self, rows: np.ndarray) -> None:
        """Observations of envs ``rows`` at their current state (all past t0): one batched render."""
        t = self.template
        scenes, poses, times, statuses = [], [], [], []
        for i in rows:
            b = self._bundles[i]
            trace = self._trace[i]
            state = trace[-1]
            pose = state[:3]
            hist = len(trace) - 1 - np.arange(3, -1, -1) * STEPS_PER_REPLAN
            route = b.ctx.route_centerline
            speed = float(np.hypot(state[3], state[4]))
            command = (route_command(to_local(route, pose[:2], float(pose[2])), max(4.0 * speed, 10.0))
                       if len(route) >= 2 else b.scene.command)
            status = EgoStatus(state[3:5].copy(), state[5:7].copy(), trace[hist, :3].copy(), int(command))
            scene = self._obs_scene[i] if self._obs_scene[i] is not None else b.scene
            time = int(self._k[i]) * STEPS_PER_REPLAN * 0.1
            self._texts[i] = t.obs_builder.instruction_text(scene, pose, time, status)
            scenes.append(scene)
            poses.append(pose)
            times.append(time)
            statuses.append(status)
        batch = t.obs_builder.observe_batch(scenes, np.stack(poses), np.array(times), statuses)
        for j, i in enumerate(rows):
            self._obs_rows[i] = {k: v[j] for k, v in batch.items()}
