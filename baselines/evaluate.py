"""Evaluation of trained baselines with the leaderboard (rule-based scorer, NAVSIM v2 protocol).

Trained runs become :class:`irlvla_gym.agents.Agent` objects (:func:`load_run_agent`) and are scored by
:func:`irlvla_gym.leaderboard.run_leaderboard` on the first ``num_scenes`` scenes of a split, so the baselines table
and the leaderboard agree number for number. The non-learning references (constant velocity, PDM-Closed, the logged
human) are the leaderboard's built-in agents; "BC alone" is the shipped ``bc_default`` network without RL (and
``bc-diffusion``, DPPO's starting point).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from baselines.common import read_json
from irlvla_gym.agents import VLANetworkAgent as BaseVLANetworkAgent

REFERENCE_AGENTS = ("stand-still", "constant-velocity", "pdm-closed", "human")
BC_AGENTS = {"bc": "bc_default", "bc-diffusion": "bc_diffusion"}
"""Row name -> VLA checkpoint of the no-RL starting points."""


class VLANetworkAgent(BaseVLANetworkAgent):
    """:class:`irlvla_gym.agents.VLANetworkAgent` that also resolves the baselines' own checkpoint names
    (``"bc_diffusion"``: :func:`baselines.pretrain.resolve_pretrained`).

    Args:
        network: the network, or a checkpoint directory / shipped name. name: row name.
        obs_config: the observation settings the network was trained with (None: default ObsConfig).
    """

    def __init__(self, network: Any, name: str, obs_config: Any = None):
        if not hasattr(network, "plan"):
            from baselines.pretrain import resolve_pretrained

            network = resolve_pretrained(str(network))
        super().__init__(network, name, obs_config)


def run_model_trusted(run_dir: str | Path) -> bool:
    """True when ``run_dir/model.zip`` was written by this project's baselines: the runner's ``config.json`` is
    there and the zip's sidecar (written by :meth:`~irlvla_gym.agents.SB3ModelAgent.save`) records the zip's current
    SHA-256. Provenance of our own run directories, not a defence against a forged one: a run directory received
    from elsewhere is trusted like code."""
    from irlvla_gym.agents import SB3ModelAgent

    run_dir = Path(run_dir)
    return (run_dir / "config.json").is_file() and SB3ModelAgent.saved_by_this_project(run_dir / "model.zip")


def is_finished_bc_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a finished ``irlvla bc`` run (its network at the top, ``trainer/state.json`` at the
    last configured epoch): such a directory is a run of the evaluation protocol like a baselines run."""
    state_path = Path(run_dir) / "trainer" / "state.json"
    if not (state_path.is_file() and (Path(run_dir) / "model.safetensors").is_file()):
        return False
    state = read_json(state_path)
    return int(state.get("epoch", 0)) >= int(state.get("bc_config", {}).get("epochs", 1 << 30))


def load_run_agent(run_dir: str | Path, name: str | None = None, trust_pickle: bool | None = None) -> Any:
    """The agent of a finished run directory: its VLA ``network/`` or its SB3 ``model.zip`` (CNN policy).

    SB3's load unpickles the zip; ``trust_pickle=None`` allows it only for a run directory this project wrote
    (:func:`run_model_trusted`), True always, False never (without ``IRLVLA_TRUST_PICKLE=1``)."""
    run_dir = Path(run_dir)
    if is_finished_bc_run(run_dir):  # `irlvla bc --out <run_dir>`: the network is the directory itself
        return VLANetworkAgent(str(run_dir), name or f"{run_dir.parent.name}/{run_dir.name}")
    cfg = read_json(run_dir / "config.json")
    label = name or f"{cfg['variant']}/s{cfg['seed']}"
    obs_config = cfg.get("env", {}).get("obs_config")
    if (run_dir / "network" / "config.json").is_file():
        return VLANetworkAgent(str(run_dir / "network"), label, obs_config)
    from irlvla_gym.agents import SB3ModelAgent

    trusted = run_model_trusted(run_dir) if trust_pickle is None else trust_pickle
    return SB3ModelAgent.load(run_dir / "model.zip", name=label, trust_pickle=trusted)


def evaluate_agents(agents: Sequence[Any], split: str = "synthetic-test", num_scenes: int | None = 100,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    """Leaderboard rows (EPDMS, PDMS, every sub-score, scenes, errors, plan_s) by agent name."""
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    result = run_leaderboard(LeaderboardConfig(split=split, agents=list(agents), num_scenes=num_scenes,
                                               progress=progress, out=None))
    return {row["agent"]: row for row in result.rows}


def reference_agents(obs_config: Any = None) -> list[Any]:
    """The built-in rule-based references and the no-RL BC networks (camera + ego + instruction)."""
    from irlvla_gym.agents import load_agent

    out: list[Any] = [load_agent(name) for name in REFERENCE_AGENTS]
    for name, checkpoint in BC_AGENTS.items():
        try:
            out.append(VLANetworkAgent(checkpoint, name, obs_config))
        except FileNotFoundError:
            continue  # bc_diffusion not built yet: python -m baselines.pretrain
    return out


__all__ = ["BC_AGENTS", "REFERENCE_AGENTS", "VLANetworkAgent", "evaluate_agents", "is_finished_bc_run", "load_run_agent",
           "reference_agents", "run_model_trusted"]
