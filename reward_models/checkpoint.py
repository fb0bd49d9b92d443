"""Checkpoints of the reward world model: safetensors + json only (no pickle).

A model directory holds ``model.safetensors`` (weights) and ``config.json``::

    {"model_type": "irlvla_rwm", "format": "irlvla-rwm", "format_version": 1, "model": {ModelConfig fields},
     "model_sha256": "<hex>", ...extra (training summary)}

That is the Hugging Face Hub layout: :class:`~reward_models.model.RewardWorldModel` saves and loads through
huggingface_hub's ``PyTorchModelHubMixin`` (local directories, shipped names, Hub repo ids), and ``model_type``
(:data:`MODEL_TYPE`) lets ``transformers.AutoConfig.from_pretrained(dir)`` read the file once
:func:`register_auto_config` ran (the ``model`` dict is then an attribute). Checkpoints written before the key existed
(the shipped ones) load unchanged; only AutoConfig needs it.

``model_sha256`` (SHA-256 of ``model.safetensors``) is checked on load when present (checkpoints written before it
existed, the shipped ones included, have none and still load); weights with NaN or inf entries are refused.

A training directory additionally keeps ``last/`` for resuming: ``model.safetensors``, ``optimizer.safetensors``
(Adam moments and step counts flattened to ``state.<param index>.<name>`` tensors, plus the torch RNG state) and
``trainer.json`` (epoch, step, best validation loss, patience, numpy RNG state, optimizer hyperparameters).

Every file is written atomically (temporary file + rename). Any unreadable, truncated or mismatching file raises
:class:`CheckpointError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

FORMAT = "irlvla-rwm"
FORMAT_VERSION = 1
MODEL_TYPE = "irlvla_rwm"
"""``model_type`` of a reward-world-model ``config.json`` (what transformers' ``AutoConfig`` dispatches on)."""
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Directory of the checkpoints shipped in the package (``default``, ``v1``, ``policy_aware``)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or from an incompatible version (message names it)."""


def _atomic_bytes(path: Path, data: bytes) -> None:
    from irlvla_gym.utils import atomic_write

    with atomic_write(path) as fh:
        fh.write(data)


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically write a safetensors file."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    _atomic_bytes(Path(path), data)


def load_tensors(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file; CheckpointError naming the file if it is missing or damaged, or (``sha256`` given:
    the hex digest recorded for it) if its bytes are not the recorded ones."""
    from safetensors.torch import load

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{p}: checkpoint file not found") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{p}: checksum mismatch (SHA-256 {hashlib.sha256(data).hexdigest()[:16]}..., "
                              f"recorded {str(sha256)[:16]}...): the file changed or is damaged")
    try:
        return load(data)
    except Exception as exc:  # safetensors raises SafetensorError / ValueError on truncation or garbage
        raise CheckpointError(f"{p}: corrupted or truncated safetensors file ({type(exc).__name__}: {exc})") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    _atomic_bytes(Path(path), json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p}: checkpoint file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p}: corrupted json ({exc})") from None


def save_model(model, path: str | os.PathLike, extra: Mapping | None = None) -> None:
    """``model.safetensors`` + ``config.json`` into directory ``path``."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    save_tensors(d / MODEL_FILE, model.state_dict(), {"format": FORMAT, "format_version": FORMAT_VERSION})
    digest = hashlib.sha256((d / MODEL_FILE).read_bytes()).hexdigest()
    write_json(d / CONFIG_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                 "model": model.config.to_dict(), **dict(extra or {}), "model_sha256": digest,
                                 "model_type": MODEL_TYPE})


def check_finite(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """CheckpointError naming ``path`` and the first tensor with a NaN or inf entry (floating tensors only)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {name!r} has {bad} NaN/inf value(s); the checkpoint is unusable")


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in the package (subdirectories of ``reward_models/checkpoints``)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_checkpoint(spec: str | os.PathLike | None) -> Path:
    """The checkpoint directory of ``spec``: None = the shipped ``default``; an existing directory as given; else a
    bare name (no path separator) of a shipped checkpoint, e.g. ``"policy_aware"``. An existing directory wins over
    a shipped name, so paths that worked before keep working. Anything else raises :class:`CheckpointError`
    listing the shipped names."""
    if spec is None:
        return SHIPPED_DIR / "default"
    p = Path(spec)
    if p.is_dir():
        return p
    name = str(spec)
    if name and "/" not in name and os.sep not in name and (SHIPPED_DIR / name / CONFIG_FILE).is_file():
        return SHIPPED_DIR / name
    raise CheckpointError(f"{spec}: not a checkpoint directory (expected {MODEL_FILE} + {CONFIG_FILE}) nor the name "
                          f"of a shipped checkpoint (shipped: {', '.join(shipped_checkpoints())})")


def read_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """(directory, config.json contents, weights) of a directory written by :func:`save_model` or the name of a shipped
    checkpoint (:func:`resolve_checkpoint`); :class:`CheckpointError` if the format is not this one. The model is
    built by :meth:`reward_models.model.RewardWorldModel.from_pretrained` (this module knows no model class)."""
    d = resolve_checkpoint(path)
    cfg = read_json(d / CONFIG_FILE)
    if cfg.get("format") != FORMAT or cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{d / CONFIG_FILE}: not an {FORMAT} v{FORMAT_VERSION} checkpoint "
                              f"(format {cfg.get('format')!r} v{cfg.get('format_version')!r})")
    tensors = load_tensors(d / MODEL_FILE, sha256=cfg.get("model_sha256"))
    check_finite(tensors, d / MODEL_FILE)
    return d, cfg, tensors


HUB_DOWNLOAD_ARGS = ("revision", "cache_dir", "force_download", "local_files_only", "token")


def download_checkpoint(repo_id: str, files: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE), **hub_kwargs: Any) -> Path:
    """The local snapshot directory of a Hub repo holding ``files`` (downloaded by huggingface_hub, or taken from
    its cache); ``hub_kwargs``: those of :data:`HUB_DOWNLOAD_ARGS` (others, e.g. what the mixin forwards, ignored)."""
    from huggingface_hub import hf_hub_download

    kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_DOWNLOAD_ARGS}
    paths = [Path(hf_hub_download(repo_id, name, **kwargs)) for name in files]
    return paths[0].parent


def register_auto_config() -> type:
    """Register the RWM ``config.json`` (:data:`MODEL_TYPE`) with ``transformers.AutoConfig``; returns its class
    (imports transformers; ``ModelConfig.from_dict(hf.model)`` rebuilds the model settings from what it reads)."""
    from irlvla_gym.policies.config import auto_config_class

    return auto_config_class(MODEL_TYPE)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimizer's state to tensors (``state.<i>.<name>``) + its param groups (json-able)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for i, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"state.{i}.{name}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if not key.startswith("state."):
            continue
        _, i, name = key.split(".", 2)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def load_hub_repo(load: Any, repo: Any, what: str) -> Any:
    """``load()`` (the mixin's ``from_pretrained`` of a Hub repo id), its failures other than a
    :class:`CheckpointError` (offline, no such repo, no access) as one :class:`CheckpointError` naming ``repo`` and
    what it was not locally (``what``)."""
    try:
        return load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Hub failure becomes the one error the callers document
        raise CheckpointError(f"{repo}: {what}, and the Hub repo could not be loaded ({type(exc).__name__}: {exc})") \
            from exc


__all__ = ["CheckpointError", "load_hub_repo", "check_finite", "save_model", "read_checkpoint", "resolve_checkpoint",
           "shipped_checkpoints", "SHIPPED_DIR",
           "save_tensors", "load_tensors", "read_json", "write_json", "optimizer_tensors", "load_optimizer",
           "FORMAT_VERSION", "MODEL_TYPE", "register_auto_config", "download_checkpoint"]
