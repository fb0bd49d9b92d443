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
4. a path to a Stable-Baselines3 model ``.zip`` (:class:`SB3ModelAgent`): refused unless pickles are trusted
   (``trust_pickle=True``, ``--trust-pickle`` or ``IRLVLA_TRUST_PICKLE=1``), because SB3's ``load`` unpickles the
   zip's ``:serialized:`` entries, which can run any code;
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

        n = len(scenes)
        plans = np.zeros((n, *PLAN_SHAPE))
        for rows in instruction_length_groups(observations.get("instruction"), n):
            plans[rows] = self.network.plan({k: np.asarray(observations[k])[rows] for k in self.obs_keys})
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


class SB3ModelAgent:
    """A Stable-Baselines3 model (any ``BaseAlgorithm``) as an :class:`Agent`.

    Observation keys come from the model's observation space; the :class:`~irlvla_gym.obs.config.ObsConfig` from
    ``obs_config``, else the sidecar ``<model>.irlvla.json`` (written by :meth:`save`), else the default. The action
    becomes a plan like the env decodes it: ``Box(24)`` -> :func:`~irlvla_gym.plans.codec.action_to_plan`,
    ``Discrete(K)`` -> the K-entry trajectory vocabulary.

    Args:
        model: a loaded ``BaseAlgorithm``.
        name: row name (default: the model's class name in lower case).
        obs_config: :class:`ObsConfig` or dict; must reproduce the model's observation shapes.
        deterministic: ``predict(..., deterministic=...)``.
    """

    def __init__(self, model: Any, name: str | None = None, obs_config: Any = None, deterministic: bool = True):
        from irlvla_gym.plans.codec import make_action_type
        from irlvla_gym.obs.config import ObsConfig
        from irlvla_gym.obs.registry import ObservationBuilder

        self.model = model
        self.name = name or type(model).__name__.lower()
        self.deterministic = deterministic
        self.obs_keys = obs_keys_of_space(model.observation_space)
        self.obs_config = ObsConfig.from_dict(obs_config)
        expected = ObservationBuilder(self.obs_keys, self.obs_config).space
        for entry, sub in model.observation_space.spaces.items():
            if expected[entry].shape != sub.shape:
                raise ValueError(f"model {self.name!r}: observation entry {entry!r} has shape {sub.shape} but "
                                 f"ObsConfig gives {expected[entry].shape}; pass the training obs_config (or keep "
                                 f"the {SIDECAR_SUFFIX} file written by SB3ModelAgent.save beside the zip)")
        space = model.action_space
        if getattr(space, "n", None) is not None:
            self.action_type = make_action_type("vocabulary", int(space.n))
        elif tuple(getattr(space, "shape", ())) == (NUM_FUTURE * 3,):
            self.action_type = make_action_type("trajectory")
        else:
            raise ValueError(f"model {self.name!r}: action space {space} is neither Box(24,) nor Discrete(K)")

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None, obs_config: Any = None,
             algorithm: type | None = None, deterministic: bool = True,
             trust_pickle: bool = False) -> "SB3ModelAgent":
        """Load ``path`` (a ``.zip`` saved by SB3) with ``algorithm.load``; when ``algorithm`` is None the SB3
        algorithms (PPO, A2C, SAC, TD3, DDPG, DQN) and the ``BaseAlgorithm`` entry points are tried in turn.

        SB3's ``load`` unpickles the zip's ``:serialized:`` entries (spaces, schedules, policy class), and a pickle
        can run any code, so this raises :class:`UntrustedInputError` unless ``trust_pickle`` (or
        ``IRLVLA_TRUST_PICKLE=1``) says the file is trusted like code. Nothing of the file is read before that."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SB3 model {path} does not exist")
        if not pickle_trusted(trust_pickle):
            raise UntrustedInputError(
                f"{path}: loading a Stable-Baselines3 .zip unpickles its ':serialized:' entries, which can run any "
                f"code; refused. If you trust this file like code, pass --trust-pickle (command line), "
                f"trust_pickle=True (Python) or set {TRUST_PICKLE_ENV}=1")
        sidecar = path.with_suffix(SIDECAR_SUFFIX)
        if obs_config is None and sidecar.is_file():
            obs_config = json.loads(sidecar.read_text()).get("obs_config")
        candidates = ([algorithm] if algorithm is not None
                      else _sb3_algorithm_classes() + _entry_point_algorithm_classes())
        failures = []
        for algo in candidates:
            try:
                model = algo.load(str(path), device="cpu")
            except Exception as exc:  # noqa: BLE001 - try the next algorithm class
                failures.append(f"{algo.__name__}: {type(exc).__name__}: {exc}"[:200])
                continue
            return cls(model, name=name or path.stem, obs_config=obs_config, deterministic=deterministic)
        raise ValueError(f"could not load {path} with any SB3 algorithm: " + "; ".join(failures))

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model zip and the ``.irlvla.json`` sidecar (observation settings) beside it."""
        path = Path(path)
        if path.suffix != ".zip":
            path = path.with_suffix(".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(str(path))
        cfg = dataclasses.asdict(self.obs_config)
        # The zip's hash lets code that wrote a run directory recognise its own model later (see
        # saved_by_this_project); it is provenance for our own files, not a signature against forgery.
        sidecar = {"obs_keys": list(self.obs_keys), "obs_config": cfg, "zip_sha256": file_sha256(path)}
        path.with_suffix(SIDECAR_SUFFIX).write_text(json.dumps(sidecar, indent=2))
        return path

    @staticmethod
    def saved_by_this_project(path: str | os.PathLike) -> bool:
        """True when ``path``'s sidecar (written by :meth:`save`) records the zip's current SHA-256."""
        path = Path(path)
        sidecar = path.with_suffix(SIDECAR_SUFFIX)
        try:
            recorded = json.loads(sidecar.read_text()).get("zip_sha256")
        except (OSError, ValueError, AttributeError):
            return False
        return isinstance(recorded, str) and path.is_file() and recorded == file_sha256(path)

    def _to_plans(self, actions: np.ndarray, batch: int) -> np.ndarray:
        actions = np.asarray(actions).reshape(batch, -1)
        plans = []
        for a in actions:
            decoded = self.action_type.decode(a if a.size > 1 else a[0])
            if decoded.invalid:
                raise ValueError(f"model {self.name!r} produced an invalid action {a.tolist()[:6]}...")
            plans.append(decoded.plan)
        return np.stack(plans)

    def plan(self, observation: dict[str, np.ndarray], scene: Scene | None) -> np.ndarray:
        action, _ = self.model.predict(observation, deterministic=self.deterministic)
        return self._to_plans(action, 1)[0]

    def plan_batch(self, observations: dict[str, np.ndarray], scenes: Sequence[Scene]) -> np.ndarray:
        actions, _ = self.model.predict(observations, deterministic=self.deterministic)
        return self._to_plans(actions, len(scenes))

    def __repr__(self) -> str:
        return f"SB3ModelAgent({self.name!r}, obs_keys={self.obs_keys})"


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
    if key.endswith(".zip") or (os.path.sep in key and not _looks_like_module_spec(key)):
        return SB3ModelAgent.load(key, trust_pickle=trust_pickle)
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

    return {"ppo": lambda: sb3.PPO, "a2c": lambda: sb3.A2C, "sac": lambda: sb3.SAC, "td3": lambda: sb3.TD3}


BUILTIN_ALGORITHM_NAMES = ("ppo", "a2c", "sac", "td3")


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


def _env_settings(env: Any) -> Mapping[str, Any]:
    """obs_config of an IRL-VLA env (gymnasium env, wrapper or SB3 VecEnv); {} when unknown."""
    cfg = None
    try:
        cfg = env.unwrapped.config
    except AttributeError:
        try:
            cfg = env.get_attr("config")[0]
        except Exception:  # noqa: BLE001 - not an IRL-VLA env: default settings
            cfg = None
    obs_config = getattr(cfg, "obs_config", None)
    return {"obs_config": obs_config} if obs_config is not None else {}


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
        return SB3ModelAgent(model, name=str(label).split(":")[-1], **_env_settings(env))
    if callable(algorithm):
        agent = algorithm(env_fn, int(budget), int(seed))
        if not isinstance(agent, Agent):
            raise AgentSpecError(f"algorithm {label!r} returned {type(agent).__name__}, not an Agent")
        return agent
    raise AgentSpecError(f"algorithm {label!r} is neither an SB3 BaseAlgorithm subclass nor a train() callable")


__all__ = [
    "AGENT_GROUP", "ALGORITHM_GROUP", "ALLOW_IMPORT_ENV", "Agent", "AgentSpecError", "BUILTIN_AGENTS",
    "FunctionAgent", "PlannerAgent", "SB3ModelAgent", "SHIPPED_CHECKPOINT_DIR", "TRUST_PICKLE_ENV", "TrustOptions",
    "UntrustedInputError", "VLANetworkAgent", "agent_from_object", "apply_trust_options", "available_agents",
    "available_algorithms", "check_plan", "entry_points_of", "file_sha256", "import_allowed", "import_attr",
    "load_agent", "load_algorithm", "obs_keys_of_space", "pickle_trusted", "shipped_checkpoint",
    "shipped_checkpoints", "train_algorithm",
]
