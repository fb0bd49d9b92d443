"""Native vector envs: the episode core (:mod:`irlvla_gym.envs.core`) with N rows, plus autoreset and gymnasium's
batched infos. N scenes are stepped with one batched call into the tracker, the scorer and the renderer.

``gym.make_vec("IRLVLA-Navsim-v2", num_envs=N, vectorization_mode="vector_entry_point")`` gives
:class:`NavsimVectorEnv`, ``gym.make_vec("IRLVLA-Navsim-ClosedLoop-v2", ...)`` gives
:class:`NavsimClosedLoopVectorEnv` (keyword arguments as the single envs', plus ``autoreset_mode``).

Why: gymnasium's SyncVectorEnv and SB3's DummyVecEnv step N envs one at a time, paying the fixed cost of a tracker
call (~0.4 ms) and a scorer call (~1 ms) N times; process-based vectorisation adds pickling and IPC per step. Here
one vector step makes

* one :func:`irlvla_gym.sim.simulate_plans` call for the N plans (the fused tracker: Python floats up to 16 plans,
  numpy arrays beyond; a plan's states are bit-identical alone or in a batch);
* one :func:`irlvla_gym.metrics.score_rows` call for the N (scene, plan) rows (map queries once per distinct
  scene, agents packed over rows);
* one :meth:`~irlvla_gym.obs.registry.ObservationBuilder.observe_batch` call for the observations that need
  rendering (plan-once: only scenes seen for the first time and not in the store's persisted cache,
  :mod:`irlvla_gym.envs.prepared`; closed loop: every env past t0), gathered into (N, ...) arrays that are reused
  once the caller has dropped them (:class:`~irlvla_gym.envs.core.ObservationBuffers`: returned observations are
  never written again while anyone holds them, as when every step returned new arrays).

All N envs share one :class:`~irlvla_gym.envs.core.EnvCore` (scene source, per-scene precompute cache
:func:`irlvla_gym.cache.shared_lru`, observation builder, action decoder, reward) with the single env ``template``;
each env is one row of the :class:`~irlvla_gym.envs.core.EpisodeState` plus its RNG. The episode logic is the single
envs' (same functions, M rows instead of one); this module adds only autoreset, seeding per env and info batching.

**Same numbers as N single envs.** With the same seeds (``reset(seed=s)`` seeds env i with ``s + i``, a list seeds
each env) the observations, rewards, terminations, truncations and infos equal those of
``gymnasium.vector.SyncVectorEnv`` over N single envs with the same ``autoreset_mode`` (tests/envs/
test_vector_native.py), including the autoreset infos. The only differences: ``infos["final_obs"]`` entries of the
plan-once env are the scene's cached read-only arrays (not copies), and a custom reward callable is called once per
env (not batched: a learned model may round differently in a batch; a reward with ``score_batch(scenes, plans)`` is
called once per step instead, :class:`~irlvla_gym.envs.core.CallableReward`).

**Autoreset** (``metadata["autoreset_mode"]``, https://farama.org/Vector-Autoreset-Mode): ``SAME_STEP`` by
default: an env whose episode ended is reset within the same ``step``; the returned observation is the new
episode's, ``infos["final_obs"]`` / ``infos["final_info"]`` (masks ``_final_obs`` / ``_final_info``) hold the
finished step's, and the reset info is merged into ``infos``. This is SB3's VecEnv convention (the adapter
:class:`irlvla_gym.envs.sb3.BatchedVecEnv` needs it) and the only sensible one for the plan-once env, whose every
step ends an episode (with NEXT_STEP every other vector step would be spent on resets). ``autoreset_mode=
gym.vector.AutoresetMode.NEXT_STEP`` (gymnasium's default; needed by e.g. ``VectorObservationWrapper``) and
``DISABLED`` (reset ended envs yourself with ``reset(options={"reset_mask": mask})``) are supported too. The mode
may also be given by name (``"next_step"``, ``"NEXT_STEP"``, ``"NextStep"``: :func:`autoreset_mode_of`), as YAML
configs do.

**Gymnasium's vector wrappers** (tests/envs/test_wrappers.py). Pass ``autoreset_mode`` as a plain keyword of
``gym.make_vec``: in ``vector_entry_point`` mode gymnasium refuses ``vector_kwargs`` ("Custom vector environment can
be passed arguments only through kwargs"). Observation wrappers (``gym.wrappers.vector.FlattenObservation``,
``NormalizeObservation``, every ``VectorObservationWrapper``) need NEXT_STEP (or DISABLED): with the default they raise
"Expected autoreset_mode to be NEXT_STEP or DISABLED, got AutoresetMode.SAME_STEP" (a SAME_STEP step's
``infos["final_obs"]`` would not be transformed). ``NormalizeObservation`` needs a ``Box`` observation: flatten the
Dict first (``FlattenObservation``) or make the env with ``flatten_obs=True``; normalise only float entries
(``obs_keys=("ego",)`` or ``("compact",)``: normalised uint8 images or token ids are meaningless).
``NormalizeReward`` and ``RecordEpisodeStatistics`` read ``metadata["autoreset_mode"]`` and work in both modes::

    envs = gym.make_vec("IRLVLA-Navsim-ClosedLoop-v2", num_envs=4, vectorization_mode="vector_entry_point",
                        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, obs_keys=("ego",))
    envs = gym.wrappers.vector.FlattenObservation(envs)
    envs = gym.wrappers.vector.NormalizeObservation(envs)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(gym.wrappers.vector.NormalizeReward(envs))

In NEXT_STEP mode the step after an env's episode ended only resets it: that env's observation is the new
episode's first one, its reward 0 and its termination / truncation False (as ``SyncVectorEnv``).

Invalid actions (NaN/inf, bad index) never raise, as in the single envs: reward 0 and ``invalid_action`` in the
step info.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from irlvla_gym.envs.base import NavsimBaseEnv
from irlvla_gym.envs.closed_loop import NavsimClosedLoopEnv
from irlvla_gym.envs.core import ScoreInfo
from irlvla_gym.envs.navsim_env import NavsimEnv
from irlvla_gym.envs.scoring import SceneBundle

# ---------------------------------------------------------------------------------------------------------------------
# Batched infos in gymnasium's layout (what VectorEnv._add_info builds one env at a time)
# ---------------------------------------------------------------------------------------------------------------------


class InfoBuilder:
    """Builds a vector-env info dict column by column, in the layout ``VectorEnv._add_info`` produces: every key
    holds an (N, ...) array (object arrays for strings and other objects, filled with None) with a boolean mask
    ``_key`` of the envs that have it; dict values nest.

    ``put(key, rows, values)`` writes the values of the envs ``rows``; the array type follows the first value, as
    in ``_add_info`` (Python float -> float64, int -> int64, bool -> bool, ndarray -> its dtype and shape), except
    ``final_obs``, always an object array of per-env observations (``_add_info``'s special case).
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
            if key == "final_obs":  # always an object array of per-env observations, as gymnasium's _add_info
                array = np.full(self.n, None, dtype=object)
            elif isinstance(first, np.ndarray):
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

    def sub(self, key: str, rows: np.ndarray) -> InfoBuilder:
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


def put_columns(builder: InfoBuilder, rows: np.ndarray, columns: dict[str, Any]) -> None:
    """Info columns of the core (:class:`~irlvla_gym.envs.core.StepOutput`) for the envs ``rows``."""
    for key, values in columns.items():
        if isinstance(values, ScoreInfo):
            full = values.full_columns()
            if full is not None:  # the common case: the scorer's columns as they are
                put_score_arrays(builder, rows, full)
            else:  # invalid actions (no "progress") or custom rewards: per-row dicts
                put_scores(builder, rows, values.rows())
        else:
            builder.put(key, rows, values)


# ---------------------------------------------------------------------------------------------------------------------
# The vector env: autoreset and seeding around the core
# ---------------------------------------------------------------------------------------------------------------------


def autoreset_mode_of(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` as an :class:`~gymnasium.vector.AutoresetMode`: the enum itself, its value (``"NextStep"``) or its
    name in any case, with or without the underscore (``"NEXT_STEP"``, ``"next_step"``, ``"nextstep"``)."""
    if isinstance(mode, AutoresetMode):
        return mode
    key = str(mode).replace("_", "").replace("-", "").lower()
    for member in AutoresetMode:
        if key in (member.value.lower(), member.name.replace("_", "").lower()):
            return member
    raise ValueError(f"autoreset_mode {mode!r}: choose from {[m.name for m in AutoresetMode]} "
                     "(gymnasium.vector.AutoresetMode)")


class NavsimVectorBase(gym.vector.VectorEnv):
    """N envs of one id: one row each of an :class:`~irlvla_gym.envs.core.EpisodeState` stepped by the core of a
    template single env (``env_class``), which holds the shared source, caches, observation builder and decoder.

    Args:
        num_envs: N.
        autoreset_mode: SAME_STEP (default), NEXT_STEP (for gymnasium's vector observation wrappers) or DISABLED;
            an :class:`~gymnasium.vector.AutoresetMode` or its name (:func:`autoreset_mode_of`).
        scene_group_size: G >= 1 (divides N): consecutive groups of G envs start every episode in the same scene,
            drawn by the group's first env (its RNG, its seed). For group-relative baselines: G plans of one scene
            in one step (plan-once env only; default 1, every env draws its own scene).
        **kwargs: the env's arguments (:class:`~irlvla_gym.envs.config.EnvConfig`), shared by the N envs.
    """

    env_class: type[NavsimBaseEnv]

    def __init__(self, num_envs: int = 8, *, autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
                 scene_group_size: int = 1, **kwargs: Any):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        if scene_group_size < 1 or num_envs % scene_group_size:
            raise ValueError(f"scene_group_size must be >= 1 and divide num_envs ({num_envs}), got {scene_group_size}")
        kwargs.pop("max_episode_steps", None)  # gym.make_vec passes the spec's (None for these ids)
        self.template = self.env_class(**kwargs)
        t = self.template
        self.core = t.core
        self.num_envs = int(num_envs)
        self.state = self.core.new_state(self.num_envs)
        self.autoreset_mode = autoreset_mode_of(autoreset_mode)
        self.render_mode = t.render_mode
        self.metadata = {**t.metadata, "autoreset_mode": self.autoreset_mode}
        self.single_observation_space = t.observation_space
        self.single_action_space = t.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.config = t.config
        self.scene_group_size = int(scene_group_size)
        if self.scene_group_size > 1 and not getattr(self.core.mode, "scores_in_place", False):
            raise ValueError("scene_group_size > 1 needs the plan-once env (every env ends its episode each step)")
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, bool)

    @property
    def envs_bundles(self) -> list[SceneBundle | None]:
        """The current scene precompute of each env."""
        return list(self.state.bundles)

    # ---- seeding and scene selection (as the single env's reset) ---------------------------------------------

    def rng_states(self) -> list[dict[str, Any] | None]:
        """Each env's scene RNG as ``bit_generator.state`` (None: not created yet). A row's RNG is used only by
        the scene draws of its resets, so restoring it (:meth:`set_rng_states`) on a rebuilt env replays the same
        scene sequence (how :mod:`irlvla_gym.envs.ray_vector` re-seeds a restarted worker)."""
        return [None if rng is None else rng.bit_generator.state for rng in self._rngs]

    def set_rng_states(self, states: Sequence[dict[str, Any] | None]) -> None:
        """Restore the scene RNGs from :meth:`rng_states` (one entry per env; None leaves that env's RNG as is)."""
        if len(states) != self.num_envs:
            raise ValueError(f"states: got {len(states)} RNG states for {self.num_envs} envs")
        for i, state in enumerate(states):
            if state is not None:
                rng, _ = seeding.np_random()
                rng.bit_generator.state = state
                self._rngs[i] = rng

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random()
        return self._rngs[i]

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
        return self.core.observations(self.state), infos.build()

    def _reset_rows(self, rows: np.ndarray, options: dict[str, Any] | None, infos: InfoBuilder) -> None:
        g = self.scene_group_size
        if g == 1:
            indices = [self.core.select_index(options, self._rng(i)) for i in rows]
        else:  # one draw per group, by its first env; a group's rows always reset together (plan-once)
            drawn = {i // g: self.core.select_index(options, self._rng(i // g * g)) for i in rows if i % g == 0}
            if any(i // g not in drawn for i in rows):
                raise RuntimeError("scene groups reset together: reset whole groups (reset_mask) or all envs")
            indices = [drawn[i // g] for i in rows]
        put_columns(infos, rows, self.core.reset(self.state, rows, indices))

    # ---- step: autoreset around the core's batched step ----------------------------------------------------------

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
            plans, invalid, clipped = self.core.decode_rows(actions, stepping, N, self.state)
            out = self.core.step(self.state, stepping, plans, invalid, clipped)
            rewards[stepping] = out.rewards
            terminations[stepping] = out.terminated
            truncations[stepping] = out.truncated
            put_columns(step_infos, stepping, out.info)
            done = np.flatnonzero(terminations | truncations)
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                if len(done):
                    # Observations of the finished step: the state's per-env dicts (the reset rebinds them).
                    infos.put("final_obs", done, [self.core.row_observation(self.state, i) for i in done])
                    final = step_infos.build()
                    _copy_rows(final, infos.sub("final_info", done), done)
                    self._reset_rows(done, None, infos)
                not_done = np.setdiff1d(stepping, done)
                if len(not_done):
                    _copy_rows(step_infos.build(), infos, not_done)
        if resetting.any():
            self._reset_rows(np.flatnonzero(resetting), None, infos)
        self._autoreset = terminations | truncations
        return self.core.observations(self.state), rewards, terminations, truncations, infos.build()

    def rewards_of(self, actions) -> np.ndarray:
        """(N,) float64 rewards that ``actions`` (a batch like :meth:`step`'s) would earn on every env's current
        scene, without stepping (plan-once env only; NotImplementedError for the closed loop). After a SAME_STEP
        step the current scenes are those of the observations it returned."""
        rows = np.arange(self.num_envs)
        plans, invalid, _ = self.core.decode_rows(actions, rows, self.num_envs, self.state)
        return self.core.rewards_of(self.state, rows, plans, invalid)

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
# The two ids
# ---------------------------------------------------------------------------------------------------------------------


class NavsimVectorEnv(NavsimVectorBase):
    """N ``IRLVLA-Navsim-v2`` envs stepped in one batch (see the module docs and :class:`NavsimVectorBase`).

    Observations are built only when a scene is seen for the first time (read from the store's persisted cache, or
    one ``observe_batch`` call for all new scenes of a step) and gathered from the per-scene cache afterwards, so a
    reset costs a copy.
    """

    env_class = NavsimEnv


class NavsimClosedLoopVectorEnv(NavsimVectorBase):
    """N ``IRLVLA-Navsim-ClosedLoop-v2`` envs stepped in one batch (see the module docs).

    Per vector step: one tracker call for the N plans (each from its env's current state), the IDM rollouts per env
    (``traffic="idm"``), one multi-scene scorer call with each env's time-shifted context, and one batched render of
    the N new observations. Arguments as :class:`NavsimVectorBase`.
    """

    env_class = NavsimClosedLoopEnv
