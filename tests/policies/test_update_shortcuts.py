"""The PPO speed-ups keep the math: distinct instruction rows encoded once, the pooled-only last fusion layer and the
inference forwards' instruction cache equal the plain paths (values and gradients) up to float rounding (1e-5)."""

from __future__ import annotations

import torch

from irlvla_gym.policies.config import VLAConfig
from irlvla_gym.policies.network import VLAEncoder

from .conftest import tiny_config

KEYS = ("camera", "ego", "instruction")


def encoder_and_inputs(batch: int = 12) -> tuple[VLAEncoder, dict[str, torch.Tensor]]:
    """A tiny two-layer fusion encoder and inputs whose instruction rows repeat (3 distinct, different lengths)."""
    torch.manual_seed(0)
    encoder = VLAEncoder(VLAConfig.from_dict(tiny_config(obs_keys=KEYS, fusion_layers=2, text_layers=2)))
    rows = torch.zeros(3, 16, dtype=torch.long)
    for i, length in enumerate((5, 9, 3)):
        rows[i, :length] = torch.randint(1, encoder.vocab_size, (length,))
    inputs = {"camera": torch.randint(0, 256, (batch, 3, 32, 64), dtype=torch.uint8),
              "ego": torch.randn(batch, 21), "instruction": rows[torch.arange(batch) % 3]}
    return encoder, inputs


def grads_of(encoder: VLAEncoder, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    encoder.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Equal up to float rounding relative to each gradient's scale (sums over 12 rows of O(100) entries)."""
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, atol=1e-6 * (1.0 + float(value.abs().max())), rtol=1e-5,
                                   msg=name)


def test_instruction_rows_are_encoded_once_with_the_plain_result():
    encoder, inputs = encoder_and_inputs()
    ids = inputs["instruction"][:, :9]
    calls: list[int] = []
    encoder.language.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["input_ids"].shape[0]),
                                               with_kwargs=True)
    dedup = encoder.encode_instructions(ids)
    plain = encoder.language_proj(encoder.language(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state)
    assert calls[0] == 3  # three distinct rows of twelve
    torch.testing.assert_close(dedup, plain, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(plain)
    got, want = grads_of(encoder, (dedup * weights).sum()), grads_of(encoder, (plain * weights).sum())
    assert_same_grads(got, want)


def test_pooled_only_equals_token_zero_of_the_full_fusion():
    encoder, inputs = encoder_and_inputs()
    full = encoder(inputs)
    pooled = encoder(inputs, pooled_only=True)
    assert pooled.shape == (12, 1, full.shape[-1])
    torch.testing.assert_close(pooled, full[:, :1], atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(pooled)
    got, want = grads_of(encoder, (pooled * weights).sum()), grads_of(encoder, (full[:, :1] * weights).sum())
    assert_same_grads(got, want)
    encoder.eval()  # the rollout's path (no grad, eval mode: torch's fast path for the full layers)
    with torch.no_grad():
        torch.testing.assert_close(encoder(inputs, pooled_only=True), encoder(inputs)[:, :1], atol=1e-5, rtol=1e-5)


def test_the_sb3_extractor_reads_only_the_pooled_token_with_the_gaussian_head():
    from irlvla_gym.policies.sb3 import VLAFeaturesExtractor
    from gymnasium import spaces
    import numpy as np

    space = spaces.Dict({"camera": spaces.Box(0, 255, (3, 32, 64), np.uint8), "ego": spaces.Box(-1e3, 1e3, (21,)),
                         "instruction": spaces.Box(0, 38, (16,), np.int64)})
    assert VLAFeaturesExtractor(space, tiny_config(obs_keys=KEYS)).pooled_only
    assert not VLAFeaturesExtractor(space, tiny_config(obs_keys=KEYS, head="diffusion")).pooled_only


def test_inference_forwards_reuse_instruction_rows_until_a_weight_changes():
    encoder, inputs = encoder_and_inputs()
    ids = inputs["instruction"][:, :9]
    calls: list[int] = []
    encoder.language.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["input_ids"].shape[0]),
                                               with_kwargs=True)
    encoder.eval()
    with torch.no_grad():
        first = encoder.encode_instructions(ids)
        again = encoder.encode_instructions(ids[:5])  # rows 0..4: all cached
        assert calls == [3]
        torch.testing.assert_close(first, encoder.project_instructions(ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(again, first[:5])
        encoder.encode_instructions(ids[:, :7])  # another trimmed length: other rows
        assert calls[-1] == 3 and len(calls) == 3
        encoder.language_proj.bias.add_(1.0)  # an in-place update (as an optimizer step) drops the cache
        moved = encoder.encode_instructions(ids)
        torch.testing.assert_close(moved, first + 1.0, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        encoder.language_proj.bias.data = encoder.language_proj.bias.data - 1.0  # replaced storage: dropped too
        torch.testing.assert_close(encoder.encode_instructions(ids), first, atol=1e-5, rtol=1e-5)
    count = len(calls)
    encoder.encode_instructions(ids)  # grad enabled: never cached
    encoder.train()
    with torch.no_grad():
        encoder.encode_instructions(ids)  # training mode: never cached
    assert len(calls) == count + 2
