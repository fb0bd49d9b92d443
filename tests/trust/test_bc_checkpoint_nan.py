"""A VLA (BC) checkpoint with a NaN weight is refused at load, naming the file and the tensor."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from irlvla_gym.policies.network import WEIGHTS_NAME, VLANetwork, resolve_checkpoint


def test_nan_weight_is_refused(tmp_path):
    copy = tmp_path / "bc"
    shutil.copytree(resolve_checkpoint("bc_default"), copy)
    state = load_file(str(copy / WEIGHTS_NAME))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(copy / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_NAME}.*{name}.*NaN"):
        VLANetwork.from_pretrained(copy)
    assert isinstance(VLANetwork.from_pretrained("bc_default"), torch.nn.Module)  # the shipped one still loads
