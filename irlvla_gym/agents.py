"""The :class:`Agent` protocol, the built-in agents, plug-in discovery and algorithm training.

An **agent** is anything the leaderboard can evaluate: it turns one observation (and, for rule-based agents, the
scene itself) into a 4 s plan::

    class MyAgent:
        name = "my-agent"                       # row name on the leaderboard
        obs_keys = ("bev", "ego")               # observation keys it needs (irlvla_gym.obs registry); () = none
        obs_config = None                       # optional: ObsConfig / dict for those keys (default ObsConfig())

        def plan(self, observation: dict, scene) -> np.ndarray:
            return np.zeros((8, 3))             # poses [x, y, yaw] at t = 0.5 .. 4 s, t0 ego frame (rear axle)

        # optional, used when present: plans of B scenes at once
        def plan_batch(self, observations: dict, scenes: list) -> np.ndarray: ...   # (B, 8, 3)

``observation`` is exactly what ``IRLVLA-Navsim-v2`` returns from ``reset`` for that scene with the same keys and
:class:`~irlvla_gym.obs.config.ObsConfig` (an empty dict when ``obs_keys`` is empty). Learned agents must only use
the observation; ``scene`` is there for rule-based agents (human, PDM-Closed) and is the privileged ground truth.

**Agent specs** (:func:`load_agent`, ``irlvla leaderboard --agents ...``), resolved in this order:

1. a built-in name: ``human``, ``constant-velocity``, ``stand-still``, ``pdm-closed`` (:data:`BUILTIN_AGENTS`);
2. the name of a shipped VLA checkpoint, i.e. any directory ``irlvla_gym/policies/checkpoints/<name>/`` holding a
   ``config.json`` (``bc_default``, the stage-1 BC network; :func:`shipped_checkpoints`), as a
   :class:`VLANetworkAgent` named ``<name>`` (``-`` and ``_`` interchangeable);
3. a name registered by an installed package in the entry-point group ``irlvla_gym.agents`` (:data:`AGENT_GROUP`);
4. a path to a trained model (:func:`load_model_path`; every model this project trains is one): a
   Stable-Baselines3 model ``.zip`` (:class:`SB3ModelAgent`), evaluated with the env settings of its sidecar
   ``<name>.irlvla.json`` (observation keys and ObsConfig, flattening, action type: written by every training
   command and by :func:`save_sb3_model`); refused unless pickles are trusted (``trust_pickle=True``,
   ``--trust-pickle`` or ``IRLVLA_TRUST_PICKLE=1``), because SB3's ``load`` unpickles the zip's ``:serialized:``
   entries, which can run any code. A VLA policy's zip whose sidecar names its ``network/`` loads that network
   instead (safetensors: no flag needed). Directories work too: a run directory (``model.zip`` or ``network/``) or
   a VLA checkpoint directory;
5. ``package.module:attr`` where attr is an Agent class (instantiated without arguments), an Agent instance, a
   factory function without required arguments returning an Agent, or a plan function ``(observation, scene) ->
   plan`` (wrapped in :class:`FunctionAgent`, named after the function).

Entry points resolve like 5 (their value is ``package.module:attr``). Shipped checkpoints load torch (lazily, on
resolution); listing them (:func:`available_agents`) only reads the folder.

**Algorithms** (:func:`train_algorithm`): built-in names ``ppo``, ``a2c``, ``sac``, ``td3`` (SB3), entry points in
the group ``irlvla_gym.algorithms`` (:data:`ALGORITHM_GROUP`) or ``module:attr`` specs. An algorithm is either an SB3
``BaseAlgorithm`` subclass (constructed with ``"MultiInputPolicy"`` on ``env_fn()``, ``learn(budget)``, wrapped as an
:class:`SB3ModelAgent`) or a callable ``train(env_fn, budget, seed) -> Agent``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from irlvla_gym.scenes.scene import NUM_FUTURE, Scene

AGENT_GROUP = "irlvla_gym.agents"
"""Entry-point group of third-party agents (name -> ``module:attr``)."""
ALGORITHM_GROUP = "irlvla_gym.algorithms"
"""Entry-point group of third-party algorithms (name -> ``module:attr``)."""
PLAN_SHAPE = (NUM_FUTURE, 3)
SIDECAR_SUFFIX = ".irlvla.json"
"""An SB3 model ``x.zip`` may have ``x.irlvla.json`` beside it: the env settings its observations need."""
TRUST_PICKLE_ENV = "IRLVLA_TRUST_PICKLE"
"""Environment variable: ``1`` trusts pickled files (SB3 zips) like ``--trust-pickle`` does (worker processes too)."""
ALLOW_IMPORT_ENV = "IRLVLA_ALLOW_IMPORT"
"""Environment variable: comma-separated module prefixes whose ``module:attr`` specs config files may import."""


class AgentSpecError(ValueError):
    """An agent or algorithm spec that cannot be resolved (the message says why and what is available)."""


class UntrustedInputError(AgentSpecError):
    """Loading the input would run code from a file (pickle) or import a module a config names; not allowed
    without an explicit flag (the message names the file, the field and the flag)."""


@dataclasses.dataclass
class TrustOptions:
    """What user files may make this process run (each field is a command-line flag; :mod:`irlvla_gym.configs`)."""

    trust_pickle: bool = False
    """load pickled files such as SB3 model .zip agents with SB3's load, which can run any code stored in them (only
    for files you trust like code); also IRLVLA_TRUST_PICKLE=1"""
    allow_import: tuple[str, ...] = ()
    """module prefixes whose 'module:attr' specs config files may import (hooks, plug-in algorithms); '*' allows
    every module; also IRLVLA_ALLOW_IMPORT=prefix,prefix"""


def pickle_trusted(trust_pickle: bool = False) -> bool:
    """True when pickled inputs may be loaded: ``trust_pickle`` or ``IRLVLA_TRUST_PICKLE=1``."""
    return bool(trust_pickle) or os.environ.get(TRUST_PICKLE_ENV, "").strip() in ("1", "true", "yes")


def import_allowed(module: str, allow_import: Sequence[str] = ()) -> bool:
    """True when ``module`` is under one of the prefixes of ``allow_import`` or ``IRLVLA_ALLOW_IMPORT`` (``*``:
    any). A prefix matches whole dotted components (``pkg`` allows ``pkg.sub``, not ``pkgevil``)."""
    prefixes = [p.strip() for p in list(allow_import) + os.environ.get(ALLOW_IMPORT_ENV, "").split(",") if p.strip()]
    return any(p == "*" or module == p or module.startswith(p + ".") for p in prefixes)


def apply_trust_options(options: TrustOptions) -> None:
    """Export ``options`` to this process's environment, so worker processes and code that loads files without
    taking the options as arguments see them too (the CLI calls this once, from the flags)."""
    if options.trust_pickle:
        os.environ[TRUST_PICKLE_ENV] = "1"
    if options.allow_import:
        old = [p for p in os.environ.get(ALLOW_IMPORT_ENV, "").split(",") if p]
        os.environ[ALLOW_IMPORT_ENV] = ",".join(dict.fromkeys(old + list(options.allow_import)))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------------------------


@runtime_checkable
class Agent(Protocol):
    """What the leaderboard evaluates (see the module docstring for the full contract).

    Attributes:
        name: row name on the leaderboard.
        obs_keys: observation keys (``irlvla_gym.obs`` registry) the agent needs; ``()`` for scene-based agents.
    """

    name: str
    obs_keys: tuple[str, ...]

    def plan(self, observation: dict[str, np.ndarray], scene: Scene | None) -> np.ndarray:
        """(8, 3) poses [x, y, yaw] (m, rad) at t = 0.5 .. 4.0 s in the t0 ego frame (rear axle)."""
        ...


def check_plan(plan: Any) -> np.ndarray:
    """``plan`` as an (8, 3) float64 array; raises ValueError for a wrong shape or non-finite values."""
    arr = np.asarray(plan, dtype=np.float64)
    if arr.shape != PLAN_SHAPE:
        raise ValueError(f"plan must have shape {PLAN_SHAPE}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("plan has NaN or inf entries")
    return arr


# --------------------------------------------------------------------------------------------------------------------
# Built-in agents
# --------------------------------------------------------------------------------------------------------------------


class PlannerAgent:
    """A rule-based :class:`~irlvla_gym.planners.Planner` (scene -> plan) as an :class:`Agent` (no observation)."""

    obs_keys: tuple[str, ...] = ()

    def __init__(self, planner: Any, name: str | None = None):
        self.planner = planner
        self.name = name or str(getattr(planner, "name", type(planner).__name__))

    def plan(self, observation: dict[str, np.ndarray], scene: Scene | None) -> np.ndarray:
        if scene is None:
            raise ValueError(f"agent {self.name!r} is rule-based and needs the scene")
        return self.planner.plan(scene)

    def plan_batch(self, observations: dict[str, np.ndarray], scenes: Sequence[Scene]) -> np.ndarray:
        return np.asarray(self.planner.plan_batch(list(scenes)), np.float64).reshape(len(scenes), *PLAN_SHAPE)

    def __repr__(self) -> str:
        return f"PlannerAgent({self.name!r})"


class FunctionAgent:
    """A plan function ``fn(observation, scene) -> (8, 3)`` as an :class:`Agent`.

    ``obs_keys`` defaults to the function's ``obs_keys`` attribute (or ``()``).
    """

    def __init__(self, fn: Callable[[dict, Scene | None], np.ndarray], name: str | None = None,
                 obs_keys: Sequence[str] | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.obs_keys = tuple(obs_keys if obs_keys is not None else getattr(fn, "obs_keys", ()))

    def plan(self, observation: dict[str, np.ndarray], scene: Scene | None) -> np.ndarray:
        return self.fn(observation, scene)


def _human() -> PlannerAgent:
    from irlvla_gym.planners import HumanPlanner

    return PlannerAgent(HumanPlanner(), "human")


def _constant_velocity() -> PlannerAgent:
    from irlvla_gym.planners import ConstantVelocityPlanner

    return PlannerAgent(ConstantVelocityPlanner(), "constant-velocity")


def _stand_still() -> PlannerAgent:
    from irlvla_gym.planners import StandStillPlanner

    return PlannerAgent(StandStillPlanner(), "stand-still")


def _pdm_closed() -> PlannerAgent:
    from irlvla_gym.planners import default_planner

    # The shared instance behind pdm_reference_progress: planning and the EP normaliser cost one run per scene.
    return PlannerAgent(default_planner("log"), "pdm-closed")


BUILTIN_AGENTS: dict[str, Callable[[], Agent]] = {
    "human": _human,
    "constant-velocity": _constant_velocity,
    "stand-still": _stand_still,
    "pdm-closed": _pdm_closed,
}
"""Built-in agent factories by name (underscored aliases ``constant_velocity``, ``stand_still``, ``pdm_closed`` also
resolve)."""


# --------------------------------------------------------------------------------------------------------------------
# VLA networks (the policies floor, imported lazily)
# --------------------------------------------------------------------------------------------------------------------

SHIPPED_CHECKPOINT_DIR = Path(__file__).resolve().parent / "policies" / "checkpoints"
"""Where shipped VLA checkpoints live (``irlvla_gym.policies.network.CHECKPOINT_DIR``, spelled out here so that
listing them imports no torch)."""


def shipped_checkpoints() -> dict[str, Path]:
    """Shipped VLA checkpoints by name: every ``SHIPPED_CHECKPOINT_DIR/<name>/`` with a ``config.json``, sorted."""
    if not SHIPPED_CHECKPOINT_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_CHECKPOINT_DIR.iterdir()) if (p / "config.json").is_file()}


def shipped_checkpoint(name: str) -> Path | None:
    """The directory of the shipped checkpoint ``name`` (``-`` and ``_`` interchangeable), or None."""
    found = shipped_checkpoints()
    for key in (name, name.replace("-", "_"), name.replace("_", "-")):
        if key in found:
            return found[key]
    return None


class VLANetworkAgent:
    """A :class:`~irlvla_gym.policies.VLANetwork` as an :class:`Agent` (deterministic plan = the head's mean, or
    the diffusion head's noise-free sample).

    Batches are planned per instruction-length group
    (:func:`~irlvla_gym.obs.instruction.instruction_length_groups`), so a scene's plan does not depend on its batch
    neighbours.

    Args:
        network: a ``VLANetwork`` (anything with ``plan(obs) -> (B, 8, 3)``, ``obs_keys`` and ``eval()``), or a
            checkpoint directory or shipped checkpoint name (loaded with ``VLANetwork.from_pretrained``).
        name: row name (default: the checkpoint's folder name, else ``"vla"``).
        obs_config: the observation settings the network was trained with (None: the default ``ObsConfig``).
    """

    def __init__(self, network: Any, name: str | None = None, obs_config: Any = None):
        from irlvla_gym.obs.config import ObsConfig

        if not hasattr(network, "plan"):
            from irlvla_gym.policies import VLANetwork

            label = Path(str(network)).name
            network = VLANetwork.from_pretrained(str(network))
            name = name or label
        self.network = network.eval()
        self.name = name or "vla"
        self.obs_keys = tuple(network.obs_keys)
        self.obs_config = ObsConfig.from_dict(obs_config)

    def plan_batch(self, observations: Mapping[str, np.ndarray], scenes: Sequence[Any]) -> np.ndarray:
        """(B, 8, 3) plans of B scenes from their stacked observations (``observations[key]``: (B, ...))."""
        from irlvla_gym.obs.instruction import instruction_length_groups
        from irlvla_gym.policies.config import network_input_keys

        n = len(scenes)
        plans = np.zeros((n, *PLAN_SHAPE))
        entries = network_input_keys(self.obs_keys)  # the keys and the masks of vector sets
        for rows in instruction_length_groups(observations.get("instruction"), n):
            plans[rows] = self.network.plan({k: np.asarray(observations[k])[rows] for k in entries})
        return plans

    def plan(self, observation: Mapping[str, np.ndarray], scene: Any) -> np.ndarray:
        return self.plan_batch({k: np.asarray(v)[None] for k, v in observation.items()}, [scene])[0]

    def __repr__(self) -> str:
        return f"VLANetworkAgent({self.name!r}, obs_keys={self.obs_keys})"


# --------------------------------------------------------------------------------------------------------------------
# SB3 models
# --------------------------------------------------------------------------------------------------------------------


def _sb3_algorithm_classes() -> list[type]:
    import stable_baselines3 as sb3

    return [sb3.PPO, sb3.A2C, sb3.SAC, sb3.TD3, sb3.DDPG, sb3.DQN]


def _entry_of(name: str) -> str:
    """The observation key (``irlvla_gym.obs`` registry) that contributes the flat entry ``name``."""
    from irlvla_gym.obs.registry import OBSERVATION_TYPES

    if name in OBSERVATION_TYPES:
        return name
    if name.endswith("_mask") and name[: -len("_mask")] in OBSERVATION_TYPES:
        return name[: -len("_mask")]
    raise ValueError(f"observation entry {name!r} belongs to no observation key of irlvla_gym.obs")


def obs_keys_of_space(space: Any) -> tuple[str, ...]:
    """Observation keys behind a ``gymnasium.spaces.Dict`` of flat entries (``agents_mask`` -> ``agents``)."""
    keys: list[str] = []
    for entry in getattr(space, "spaces", {}):
        key = _entry_of(entry)
        if key not in keys:
            keys.append(key)
    return tuple(keys)


# ---- trained-model files: the sidecar -------------------------------------------------------------------------------

SIDECAR_FORMAT = "irlvla-agent/2"
"""``format`` of the sidecars this version writes (version 1 had only ``obs_keys``, ``obs_config``, ``zip_sha256``)."""
TRAINED_ENV_FIELDS = ("action_type", "vocabulary_size", "residual_reference", "flatten_obs")
"""Env settings, beside ``obs_keys`` and ``obs_config``, that a trained model's inputs and outputs depend on."""
SETTING_KEYS = ("env_id", "obs_keys", "obs_config") + TRAINED_ENV_FIELDS
"""The env settings a sidecar records (:func:`env_settings_of`)."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """The sidecar of a model zip: ``x.zip`` -> ``x.irlvla.json``."""
    return Path(path).with_suffix(SIDECAR_SUFFIX)


def env_settings_of(env: Any) -> dict[str, Any]:
    """The settings a model trained on ``env`` needs to be evaluated as the env would (:data:`SETTING_KEYS`:
    ``env_id`` when known, ``obs_keys``, ``obs_config`` as a dict, action type, vocabulary size, residual reference,
    ``flatten_obs``), read from an IRL-VLA env: a gymnasium env or wrapper, an SB3 VecEnv or VecEnvWrapper; {} for
    any other env."""
    from irlvla_gym.obs.config import ObsConfig

    cfg, spec = None, None
    try:
        cfg = env.unwrapped.config
        spec = getattr(env, "spec", None)
    except AttributeError:
        try:
            cfg = env.get_attr("config")[0]
            spec = env.get_attr("spec")[0]
        except Exception:  # noqa: BLE001 - not an IRL-VLA env (or no spec): what is known is returned
            pass
    if cfg is None or not hasattr(cfg, "obs_keys") or not hasattr(cfg, "action_type"):
        return {}
    out: dict[str, Any] = {"obs_keys": list(cfg.obs_keys),
                           "obs_config": dataclasses.asdict(ObsConfig.from_dict(cfg.obs_config))}
    out.update({f: getattr(cfg, f) for f in TRAINED_ENV_FIELDS})
    if getattr(spec, "id", None):
        out["env_id"] = str(spec.id)
    return out


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of the model zip ``path`` as a dict, None when there is none; :class:`AgentSpecError` naming the
    file when it is not a JSON object."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise AgentSpecError(f"{side}: not a readable JSON sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise AgentSpecError(f"{side}: expected a JSON object, got {type(data).__name__}")
    return data


def _json_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    from irlvla_gym.obs.config import ObsConfig

    out = {k: settings[k] for k in SETTING_KEYS if settings.get(k) is not None}
    if "obs_keys" in out:
        out["obs_keys"] = list(out["obs_keys"])
    out["obs_config"] = dataclasses.asdict(ObsConfig.from_dict(settings.get("obs_config")))
    return out


def write_sidecar(path: str | os.PathLike, settings: Mapping[str, Any], name: str | None = None,
                  network: str | os.PathLike | None = None) -> Path:
    """Write the sidecar of the (already saved) model zip ``path``: ``settings`` (:func:`env_settings_of`), the row
    ``name`` and, for a VLA policy, ``network`` (its ``save_pretrained`` directory, stored relative to the zip's
    folder, which it must lie in), and the zip's SHA-256. Returns the sidecar's path."""
    path = Path(path)
    data: dict[str, Any] = {"format": SIDECAR_FORMAT}
    if name:
        data["name"] = str(name)
    data.update(_json_settings(settings))
    if network is not None:
        rel = Path(network)
        data["network"] = (rel.resolve().relative_to(path.parent.resolve()) if rel.is_absolute() else rel).as_posix()
    # The zip's hash lets code that wrote a run directory recognise its own model later (see
    # SB3ModelAgent.saved_by_this_project); it is provenance for our own files, not a signature against forgery.
    data["zip_sha256"] = file_sha256(path)
    side = sidecar_path(path)
    side.write_text(json.dumps(data, indent=2))
    return side


def save_sb3_model(model: Any, path: str | os.PathLike, env: Any = None, name: str | None = None,
                   settings: Mapping[str, Any] | None = None) -> Path:
    """Save a trained SB3 model as a leaderboard agent spec: ``model.save(path)`` (``.zip`` added when missing) and
    its sidecar with the env settings it was trained with, read from ``env`` (default: ``model.get_env()``) unless
    ``settings`` are given. The pair is checked to load as an :class:`SB3ModelAgent` first. Returns the zip's path::

        model = PPO("MlpPolicy", "IRLVLA-Navsim-Residual-v2").learn(8_192)
        save_sb3_model(model, "runs/ppo_residual.zip")     # irlvla leaderboard --agents runs/ppo_residual.zip ...
    """
    if settings is None:
        source = env if env is not None else model.get_env()
        settings = env_settings_of(source)
        if not settings:
            raise ValueError(f"save_sb3_model: {type(source).__name__} is no IRL-VLA env; pass env= the training env "
                             "(gym.make('IRLVLA-Navsim-v2', ...) or its VecEnv) or settings=")
    SB3ModelAgent(model, env_settings=settings)  # raises if the model's spaces do not match the settings
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_suffix(".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    write_sidecar(path, settings, name=name)
    return path


def _infer_obs_keys(space: Any, obs_config: Any, name: str) -> tuple[str, ...]:
    """Observation keys behind a model's observation space when no sidecar names them: the Dict's entries, or for a
    flat Box the ``compact`` vector of ``IRLVLA-Navsim-Residual-v2`` when its size matches."""
    if hasattr(space, "spaces"):
        return obs_keys_of_space(space)
    from irlvla_gym.obs.registry import ObservationBuilder

    size = sum(int(np.prod(s.shape)) for s in ObservationBuilder(("compact",), obs_config).space.spaces.values())
    if tuple(getattr(space, "shape", ())) == (size,):
        return ("compact",)
    raise ValueError(f"model {name!r}: flat observation space {space} and no {SIDECAR_SUFFIX} sidecar naming its "
                     "obs_keys; save the model with irlvla_gym.agents.save_sb3_model(model, path, env)")


def _infer_action_type(space: Any, name: str) -> str:
    from irlvla_gym.plans.residual import RESIDUAL_DIM

    if getattr(space, "n", None) is not None:
        return "vocabulary"
    shape = tuple(getattr(space, "shape", ()) or ())
    if shape == (NUM_FUTURE * 3,):
        return "trajectory"
    if shape == (RESIDUAL_DIM,):
        return "residual"
    raise ValueError(f"model {name!r}: action space {space} is none of Box(24,) (trajectory), Box(4,) (residual) "
                     "or Discrete(K) (vocabulary)")


def model_settings(model: Any, given: Mapping[str, Any] | None = None, name: str = "model") -> dict[str, Any]:
    """The complete env settings of an SB3 model (:data:`SETTING_KEYS`): ``given`` (a sidecar's, or
    :func:`env_settings_of` the training env) completed from the model's spaces: the Dict's entries (or ``compact``
    for a flat Box), the action type of the action space (Box(24) trajectory, Box(4) residual around the route,
    Discrete(K) a K-plan vocabulary)."""
    given = dict(given or {})
    obs_space, act_space = model.observation_space, model.action_space
    out: dict[str, Any] = {"obs_config": given.get("obs_config"),
                           "flatten_obs": bool(given.get("flatten_obs", not hasattr(obs_space, "spaces")))}
    out["obs_keys"] = tuple(given.get("obs_keys") or _infer_obs_keys(obs_space, out["obs_config"], name))
    out["action_type"] = given.get("action_type") or _infer_action_type(act_space, name)
    out["vocabulary_size"] = int(given.get("vocabulary_size") or getattr(act_space, "n", None) or 256)
    out["residual_reference"] = given.get("residual_reference") or "route"
    if given.get("env_id"):
        out["env_id"] = given["env_id"]
    return out


def _transposed_image(got: tuple, want: tuple) -> bool:
    """SB3's ``VecTransposeImage`` made the (H, W, C) entry ``want`` channels-first (its ``predict`` transposes the
    observation back itself)."""
    return len(want) == 3 and tuple(got) == (want[2], want[0], want[1])


def residual_frame_of(scene: Scene, action_type: Any) -> Any:
    """The :class:`~irlvla_gym.plans.residual.ResidualFrame` the env decodes a residual action of ``scene``'s t0
    with: the ego's t0 speed and NAVSIM's route centreline (the scorer's context, shared with PDM-Closed's cache)."""
    from irlvla_gym.planners import default_planner
    from irlvla_gym.sim import initial_state

    state = initial_state(scene)
    route = default_planner("log").context(scene).route_centerline
    return action_type.frame(float(np.hypot(state[3], state[4])), route)


class SB3ModelAgent:
    """A Stable-Baselines3 model (any ``BaseAlgorithm``) as an :class:`Agent`, evaluated as its training env would.

    The env settings (:func:`model_settings`: observation keys and :class:`~irlvla_gym.obs.config.ObsConfig`,
    ``flatten_obs``, action type, vocabulary size, residual reference) come from ``env_settings``, else the sidecar
    ``<model>.irlvla.json`` (written by :meth:`save` / :func:`save_sb3_model` and every training command), else
    the model's spaces (Dict entries or ``compact``; default ObsConfig). ``obs_config`` overrides the ObsConfig. The
    observation is flattened like the env does for a flat model; the action becomes a plan like the env decodes it:
    ``Box(24)`` -> :func:`~irlvla_gym.plans.codec.action_to_plan`, ``Discrete(K)`` -> the K-entry trajectory
    vocabulary, ``Box(4)`` residual -> around the scene's reference plan (:func:`residual_frame_of`; needs the
    scene). An image entry SB3 transposed to channels-first (``VecTransposeImage``) is accepted: its ``predict``
    transposes the channels-last observation itself.

    Args:
        model: a loaded ``BaseAlgorithm``.
        name: row name (default: the model's class name in lower case).
        obs_config: :class:`ObsConfig` or dict; must reproduce the model's observation shapes.
        deterministic: ``predict(..., deterministic=...)``.
        env_settings: the training env's settings (:func:`env_settings_of`).
    """

    def __init__(self, model: Any, name: str | None = None, obs_config: Any = None, deterministic: bool = True,
                 env_settings: Mapping[str, Any] | None = None):
        from irlvla_gym.obs.config import ObsConfig
        from irlvla_gym.plans.codec import make_action_type
        from irlvla_gym.plans.residual import ResidualAction

        self.model = model
        self.name = name or type(model).__name__.lower()
        self.deterministic = deterministic
        given = dict(env_settings or {})
        if obs_config is not None:
            given["obs_config"] = obs_config
        self.settings = model_settings(model, given, self.name)
        self.obs_keys = tuple(self.settings["obs_keys"])
        self.obs_config = ObsConfig.from_dict(self.settings["obs_config"])
        self.settings["obs_config"] = self.obs_config
        self.flatten_obs = bool(self.settings["flatten_obs"])
        kind = self.settings["action_type"]
        self.action_type = (ResidualAction(self.settings["residual_reference"]) if kind == "residual"
                            else make_action_type(kind, self.settings["vocabulary_size"]))
        self._entries = self._check_observation_space()
        self._check_action_space()

    def _check_observation_space(self) -> tuple[str, ...]:
        """The model's observation entries in the env's order; ValueError when the settings do not give its shapes."""
        from irlvla_gym.obs.registry import ObservationBuilder

        expected = ObservationBuilder(self.obs_keys, self.obs_config).space.spaces
        space = self.model.observation_space
        hint = (f"pass the training obs_config (or keep the {SIDECAR_SUFFIX} file the training wrote beside the "
                "zip)")
        if self.flatten_obs:
            size = sum(int(np.prod(s.shape)) for s in expected.values())
            if tuple(space.shape) != (size,):
                raise ValueError(f"model {self.name!r}: flat observation of shape {space.shape} but obs_keys "
                                 f"{self.obs_keys} give ({size},) with this ObsConfig; {hint}")
            return tuple(expected)
        for entry, sub in space.spaces.items():
            want = expected[entry].shape if entry in expected else None
            if want is None or (sub.shape != want and not _transposed_image(sub.shape, want)):
                raise ValueError(f"model {self.name!r}: observation entry {entry!r} has shape {sub.shape} but "
                                 f"ObsConfig gives {want}; {hint}")
        return tuple(space.spaces)

    def _check_action_space(self) -> None:
        want, got = self.action_type.space(), self.model.action_space
        if getattr(want, "n", None) != getattr(got, "n", None) or tuple(want.shape or ()) != tuple(got.shape or ()):
            raise ValueError(f"model {self.name!r}: action space {got} does not match action_type "
                             f"{self.settings['action_type']!r} ({want})")

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None, obs_config: Any = None,
             algorithm: type | None = None, deterministic: bool = True,
             trust_pickle: bool = False) -> "SB3ModelAgent":
        """Load ``path`` (a ``.zip`` saved by SB3) with ``algorithm.load``; when ``algorithm`` is None the SB3
        algorithms (PPO, A2C, SAC, TD3, DDPG, DQN) and the ``BaseAlgorithm`` entry points are tried in turn. The env
        settings and the row name (default: the sidecar's, else the file's stem) come from the sidecar.

        SB3's ``load`` unpickles the zip's ``:serialized:`` entries (spaces, schedules, policy class), and a pickle
        can run any code, so this raises :class:`UntrustedInputError` unless ``trust_pickle`` (or
        ``IRLVLA_TRUST_PICKLE=1``) says the file is trusted like code. Nothing of the file is read before that."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SB3 model {path} does not exist")
        if not pickle_trusted(trust_pickle):
            network = path.parent / "network"
            hint = (f" (or give the run directory {path.parent}: its safetensors network/ loads without unpickling)"
                    if (network / "config.json").is_file() else "")
            raise UntrustedInputError(
                f"{path}: loading a Stable-Baselines3 .zip unpickles its ':serialized:' entries, which can run any "
                f"code; refused. If you trust this file like code, pass --trust-pickle (command line), "
                f"trust_pickle=True (Python) or set {TRUST_PICKLE_ENV}=1{hint}")
        sidecar = read_sidecar(path) or {}
        settings = {k: sidecar[k] for k in SETTING_KEYS if sidecar.get(k) is not None}
        candidates = ([algorithm] if algorithm is not None
                      else _sb3_algorithm_classes() + _entry_point_algorithm_classes())
        failures = []
        for algo in candidates:
            try:
                model = algo.load(str(path), device="cpu")
            except Exception as exc:  # noqa: BLE001 - try the next algorithm class
                failures.append(f"{algo.__name__}: {type(exc).__name__}: {exc}"[:200])
                continue
            return cls(model, name=name or sidecar.get("name") or path.stem, obs_config=obs_config,
                       deterministic=deterministic, env_settings=settings)
        raise ValueError(f"could not load {path} with any SB3 algorithm: " + "; ".join(failures))

    def save(self, path: str | os.PathLike, name: str | None = None) -> Path:
        """Save the model zip and the ``.irlvla.json`` sidecar (env settings; row ``name`` when given) beside it."""
        return save_sb3_model(self.model, path, name=name, settings=self.settings)

    @staticmethod
    def saved_by_this_project(path: str | os.PathLike) -> bool:
        """True when ``path``'s sidecar (written by :meth:`save`) records the zip's current SHA-256."""
        path = Path(path)
        try:
            recorded = (read_sidecar(path) or {}).get("zip_sha256")
        except AgentSpecError:
            return False
        return isinstance(recorded, str) and path.is_file() and recorded == file_sha256(path)

    def _model_input(self, observations: Mapping[str, np.ndarray], batch: int | None) -> Any:
        """What ``predict`` takes: the model's Dict entries, or the env's flat float32 vector(s)."""
        if not self.flatten_obs:
            return {k: observations[k] for k in self._entries}
        from irlvla_gym.envs.core import flatten_observations

        return flatten_observations(observations, self._entries, batch)

    def _to_plans(self, actions: np.ndarray, scenes: Sequence[Scene | None]) -> np.ndarray:
        actions = np.asarray(actions).reshape(len(scenes), -1)
        residual = self.settings["action_type"] == "residual"
        plans = []
        for a, scene in zip(actions, scenes):
            if residual and scene is None:
                raise ValueError(f"model {self.name!r} plans residual actions around the scene's reference plan: "
                                 "it needs the scene")
            a = a if a.size > 1 else a[0]
            decoded = (self.action_type.decode(a, residual_frame_of(scene, self.action_type)) if residual
                       else self.action_type.decode(a))
            if decoded.invalid:
                raise ValueError(f"model {self.name!r} produced an invalid action {np.ravel(a).tolist()[:6]}...")
            plans.append(decoded.plan)
        return np.stack(plans)

    def plan(self, observation: dict[str, np.ndarray], scene: Scene | None) -> np.ndarray:
        action, _ = self.model.predict(self._model_input(observation, None), deterministic=self.deterministic)
        return self._to_plans(action, [scene])[0]

    def plan_batch(self, observations: dict[str, np.ndarray], scenes: Sequence[Scene]) -> np.ndarray:
        actions, _ = self.model.predict(self._model_input(observations, len(scenes)),
                                        deterministic=self.deterministic)
        return self._to_plans(actions, scenes)

    def __repr__(self) -> str:
        return f"SB3ModelAgent({self.name!r}, obs_keys={self.obs_keys})"


# ---- trained-model files: zips, VLA networks, run directories ---------------------------------------------------------


def _network_of(path: Path, sidecar: Mapping[str, Any]) -> Path | None:
    """The VLA network directory a zip's sidecar names (``network``), when the sidecar records the zip's current
    hash; it must lie inside the zip's folder (AgentSpecError otherwise)."""
    network = sidecar.get("network")
    if not network or sidecar.get("zip_sha256") != file_sha256(path):
        return None
    folder = path.parent.resolve()
    target = (folder / str(network)).resolve()
    if folder != target and folder not in target.parents:
        raise AgentSpecError(f"{sidecar_path(path)}: network {network!r} lies outside {folder}")
    return target


def _run_config(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_model_path(path: str | os.PathLike, name: str | None = None, trust_pickle: bool = False) -> Agent:
    """The agent of a trained-model file or directory (every model this project trains is one):

    * ``x.zip`` whose sidecar names a ``network`` (VLA policies trained by ``irlvla baselines`` / ``irlvla
      pipeline``) and records the zip's hash: that :class:`VLANetworkAgent` (safetensors, no pickle), with the
      sidecar's ObsConfig and row name;
    * any other ``x.zip``: :meth:`SB3ModelAgent.load` (needs ``trust_pickle``);
    * a directory holding ``model.zip`` with its sidecar (a run directory): as that zip;
    * a VLA checkpoint directory (``config.json`` + ``model.safetensors``): a :class:`VLANetworkAgent`;
    * a run directory holding ``network/`` (DPPO runs; VLA runs written before sidecars named the network): that
      network, with the run's ``config.json`` env ObsConfig and row name ``<variant>/s<seed>``;
    * a directory holding only ``model.zip``: as that zip."""
    path = Path(path)
    if path.is_dir():
        zip_path, network_dir = path / "model.zip", path / "network"
        if zip_path.is_file() and (sidecar_path(zip_path).is_file() or not (network_dir / "config.json").is_file()):
            return load_model_path(zip_path, name, trust_pickle)
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return VLANetworkAgent(path, name or path.name)
        if (network_dir / "config.json").is_file():
            cfg = _run_config(path)
            label = f"{cfg['variant']}/s{cfg['seed']}" if {"variant", "seed"} <= set(cfg) else path.name
            obs_config = cfg.get("env", {}).get("obs_config") if isinstance(cfg.get("env"), dict) else None
            return VLANetworkAgent(network_dir, name or label, obs_config)
        raise AgentSpecError(f"{path}: a directory agent holds model.zip (+ {SIDECAR_SUFFIX}), a VLA checkpoint "
                             "(config.json + model.safetensors) or network/")
    sidecar = read_sidecar(path) if path.is_file() else None
    network = _network_of(path, sidecar) if sidecar else None
    if network is not None:
        return VLANetworkAgent(network, name or sidecar.get("name") or path.stem, sidecar.get("obs_config"))
    return SB3ModelAgent.load(path, name=name, trust_pickle=trust_pickle)


# --------------------------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------------------------


def entry_points_of(group: str) -> dict[str, metadata.EntryPoint]:
    """Entry points of ``group`` by name (first one wins on duplicate names; read fresh on every call)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def available_agents() -> dict[str, str]:
    """Every agent name that resolves without a path or module spec: name -> where it comes from."""
    out = {name: "built-in" for name in BUILTIN_AGENTS}
    for name in shipped_checkpoints():
        out.setdefault(name, f"shipped VLA checkpoint irlvla_gym/policies/checkpoints/{name}")
    for name, ep in entry_points_of(AGENT_GROUP).items():
        out.setdefault(name, f"entry point {ep.value}")
    return out


def import_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AgentSpecError(f"spec {spec!r} must look like 'package.module:attr'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentSpecError(f"cannot import module {module_name!r} of spec {spec!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AgentSpecError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _required_params(fn: Callable) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in sig.parameters.values()
               if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def agent_from_object(obj: Any, name: str) -> Agent:
    """An Agent from what a ``module:attr`` spec or an entry point points at (see the module docstring)."""
    if inspect.isclass(obj):
        agent = obj()
    elif isinstance(obj, Agent):
        agent = obj
    elif callable(obj) and _required_params(obj) == 0:
        agent = obj()
    elif callable(obj):
        agent = FunctionAgent(obj, name=name)
    else:
        raise AgentSpecError(f"{name!r} is neither an Agent class, an Agent, a factory nor a plan function")
    if not isinstance(agent, Agent):
        raise AgentSpecError(f"{name!r} did not give an Agent (needs name, obs_keys and plan(observation, scene)); "
                             f"got {type(agent).__name__}")
    return agent


def load_agent(spec: str | Agent, trust_pickle: bool = False) -> Agent:
    """Resolve an agent spec (module docstring: built-in name, entry point, SB3 ``.zip``, ``module:attr``).

    ``trust_pickle``: allow SB3 ``.zip`` agents (their loading runs pickled code; see :meth:`SB3ModelAgent.load`).
    A ``module:attr`` spec imports that module: it comes from the caller (command line, Python), not from a file."""
    if not isinstance(spec, str):
        if isinstance(spec, Agent):
            return spec
        raise AgentSpecError(f"not an agent spec: {spec!r}")
    key = spec.strip()
    alias = key.replace("_", "-")
    if alias in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[alias]()
    checkpoint = shipped_checkpoint(key) if key and os.path.sep not in key else None
    if checkpoint is not None:
        return VLANetworkAgent(checkpoint, checkpoint.name)
    eps = entry_points_of(AGENT_GROUP)
    if key in eps:
        return agent_from_object(eps[key].load(), key)
    if key.endswith(".zip") or os.path.isdir(key) or (os.path.sep in key and not _looks_like_module_spec(key)):
        return load_model_path(key, trust_pickle=trust_pickle)
    if _looks_like_module_spec(key):
        return agent_from_object(import_attr(key), key.partition(":")[2])
    raise AgentSpecError(f"unknown agent {spec!r}: not a built-in or registered name ({sorted(available_agents())}), "
                         "not an SB3 .zip path and not a 'package.module:attr' spec")


def _looks_like_module_spec(spec: str) -> bool:
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr and os.path.sep not in module and not module.endswith(".zip"))


# --------------------------------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------------------------------


def _builtin_algorithms() -> dict[str, Callable[[], Any]]:
    import stable_baselines3 as sb3

    return {"ppo": lambda: sb3.PPO, "a2c": lambda: sb3.A2C, "sac": lambda: sb3.SAC, "td3": lambda: sb3.TD3,
            "dqn": lambda: sb3.DQN}


BUILTIN_ALGORITHM_NAMES = ("ppo", "a2c", "sac", "td3", "dqn")


def available_algorithms() -> dict[str, str]:
    """Algorithm names: built-in SB3 ones and the ``irlvla_gym.algorithms`` entry points."""
    out = {name: "built-in (stable-baselines3)" for name in BUILTIN_ALGORITHM_NAMES}
    for name, ep in entry_points_of(ALGORITHM_GROUP).items():
        out.setdefault(name, f"entry point {ep.value}")
    return out


def _entry_point_algorithm_classes() -> list[type]:
    from stable_baselines3.common.base_class import BaseAlgorithm

    classes = []
    for ep in entry_points_of(ALGORITHM_GROUP).values():
        try:
            obj = ep.load()
        except Exception:  # noqa: BLE001 - a broken plug-in must not stop loading other models
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseAlgorithm):
            classes.append(obj)
    return classes


def load_algorithm(spec: str | Any) -> Any:
    """An SB3 ``BaseAlgorithm`` subclass or a ``train(env_fn, budget, seed)`` callable, from a name or spec."""
    if not isinstance(spec, str):
        return spec
    key = spec.strip()
    builtin = _builtin_algorithms()
    if key.lower() in builtin:
        return builtin[key.lower()]()
    eps = entry_points_of(ALGORITHM_GROUP)
    if key in eps:
        return eps[key].load()
    if _looks_like_module_spec(key):
        return import_attr(key)
    raise AgentSpecError(f"unknown algorithm {spec!r}: choose from {sorted(available_algorithms())} or give "
                         "'package.module:attr'")


def train_algorithm(name_or_spec: str | Any, env_fn: Callable[[], Any], budget: int, seed: int = 0,
                    name: str | None = None, **algorithm_kwargs: Any) -> Agent:
    """Train an algorithm on ``env_fn()`` for ``budget`` environment steps and return the resulting Agent.

    Args:
        name_or_spec: an algorithm name (:func:`available_algorithms`), ``module:attr``, an SB3 ``BaseAlgorithm``
            subclass or a ``train(env_fn, budget, seed) -> Agent`` callable.
        env_fn: makes the training env (the baselines' identical env: same scenes, observation and action settings).
        budget: environment steps (SB3 ``learn(total_timesteps=budget)``).
        seed: seed of the algorithm (SB3 ``seed=``).
        name: row name of the agent (default: the algorithm name).
        **algorithm_kwargs: extra constructor arguments for an SB3 class (e.g. ``n_steps``, ``batch_size``).

    Returns:
        an :class:`Agent` (an :class:`SB3ModelAgent` for SB3 classes).
    """
    from stable_baselines3.common.base_class import BaseAlgorithm

    algorithm = load_algorithm(name_or_spec)
    label = name or (name_or_spec if isinstance(name_or_spec, str) else getattr(algorithm, "__name__", "algorithm"))
    if inspect.isclass(algorithm) and issubclass(algorithm, BaseAlgorithm):
        env = env_fn()
        import gymnasium as gym

        space = getattr(env, "observation_space", None)
        policy = "MultiInputPolicy" if isinstance(space, gym.spaces.Dict) else "MlpPolicy"
        kwargs = {"seed": seed, "device": "cpu", "verbose": 0, **algorithm_kwargs}
        model = algorithm(policy, env, **kwargs)
        model.learn(total_timesteps=int(budget))
        return SB3ModelAgent(model, name=str(label).split(":")[-1], env_settings=env_settings_of(env))
    if callable(algorithm):
        agent = algorithm(env_fn, int(budget), int(seed))
        if not isinstance(agent, Agent):
            raise AgentSpecError(f"algorithm {label!r} returned {type(agent).__name__}, not an Agent")
        return agent
    raise AgentSpecError(f"algorithm {label!r} is neither an SB3 BaseAlgorithm subclass nor a train() callable")


__all__ = [
    "AGENT_GROUP", "ALGORITHM_GROUP", "ALLOW_IMPORT_ENV", "Agent", "AgentSpecError", "BUILTIN_AGENTS",
    "FunctionAgent", "PlannerAgent", "SB3ModelAgent", "SETTING_KEYS", "SHIPPED_CHECKPOINT_DIR", "SIDECAR_FORMAT",
    "SIDECAR_SUFFIX", "TRAINED_ENV_FIELDS", "TRUST_PICKLE_ENV", "TrustOptions", "UntrustedInputError",
    "VLANetworkAgent", "agent_from_object", "apply_trust_options", "available_agents", "available_algorithms",
    "check_plan", "entry_points_of", "env_settings_of", "file_sha256", "import_allowed", "import_attr", "load_agent",
    "load_algorithm", "load_model_path", "model_settings", "obs_keys_of_space", "pickle_trusted", "read_sidecar",
    "residual_frame_of", "save_sb3_model", "shipped_checkpoint", "shipped_checkpoints", "sidecar_path",
    "train_algorithm", "write_sidecar",
]
