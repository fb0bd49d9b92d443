"""Stable-Baselines3 integration: :class:`VLAPolicy` (an ``ActorCriticPolicy``) and its features extractor.

::

    import gymnasium as gym, irlvla_gym
    from stable_baselines3 import PPO
    from irlvla_gym.policies import VLAPolicy

    env = gym.make("IRLVLA-Navsim-v2", obs_keys=("camera", "ego", "instruction"))
    model = PPO(VLAPolicy, env, n_steps=64, batch_size=32,
                policy_kwargs=dict(pretrained_path="bc_default"))   # or vla_config=dict(head="diffusion", ...)
    model.learn(1_000)

How the SB3 pieces map onto the network (d = ``VLAConfig.hidden``):

* ``features_extractor`` = :class:`VLAFeaturesExtractor`: SB3-preprocessed observations (images already / 255
  and possibly transposed to channels-first by ``VecTransposeImage``) -> fused tokens (B, T, d).
* ``mlp_extractor`` = :class:`VLALatent`: actor latent = the fused tokens (B, T, d) for the plan head (or the pooled
  token (B, d) for other action spaces); critic latent = an MLP of the pooled token (B, d).
* ``action_net`` = the planning head (``GaussianHead`` or ``DiffusionHead``): tokens -> mean action (B, 24); its
  ``log_std`` (24,) is the policy's ``log_std`` (the same Parameter), so SB3's ``DiagGaussianDistribution`` samples
  around the MLP's or the diffusion plan's mean. For a ``Discrete`` action space (``action_type="vocabulary"``) SB3's
  own linear ``action_net`` over the pooled token gives the categorical logits instead.
* ``value_net`` = ``Linear(d, 1)`` on the critic latent: the value head on the fused features.

Pretrained weights: ``pretrained_path`` (a :meth:`VLANetwork.save_pretrained` directory or a shipped checkpoint name
such as ``"bc_default"``) is loaded *after* SB3 has built the modules, and SB3's orthogonal initialisation
(``ortho_init``, off by default here) never touches the encoder or the head, only the critic MLP and value head.
So the weights of ``PPO(VLAPolicy, env, policy_kwargs=dict(pretrained_path=p)).policy.network`` equal the
checkpoint's. ``PPO.load`` rebuilds the policy from the saved ``policy_kwargs`` (so a custom ``pretrained_path``
must still exist, or pass ``custom_objects={"policy_kwargs": {...}}``) and then restores the trained weights.

Observation scaling follows the keys, not whatever a wrapper makes of the space: ``camera`` and ``bev`` are uint8
0..255 images (scaled by 1/255 in the network), ``instruction`` holds integer token ids, ``ego`` is used as it
comes. The policy keeps its own copy of the observation space taken at construction (a wrapper editing the env's
space in place later cannot change its preprocessing) and refuses, with a ValueError naming the key and the fix,
an image entry that is not a uint8 0..255 Box or a token entry that is not an integer Box (at construction), or
normalised values reaching an image / token entry (at every forward). That is what SB3's ``VecNormalize`` does with
its defaults (it normalises every Dict entry); normalise only the float entries::

    from stable_baselines3.common.vec_env import VecNormalize
    from irlvla_gym.envs.sb3 import BatchedVecEnv

    venv = VecNormalize(BatchedVecEnv("IRLVLA-Navsim-v2", 16, obs_keys=("camera", "ego", "instruction")),
                        norm_obs_keys=["ego"])
    model = PPO(VLAPolicy, venv)
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from irlvla_gym.obs.ego import SPEED as SPEED_INDEX
from irlvla_gym.plans.codec import ACTION_DIM
from irlvla_gym.policies.config import SUPPORTED_OBS_KEYS, WEIGHTS_NAME, VLAConfig, network_input_keys
from irlvla_gym.policies.network import VLAEncoder, VLANetwork, make_head, prepare_observations, resolve_checkpoint


FREEZABLE = ("vision", "language")
"""Encoders that :class:`VLAPolicy` can keep frozen during RL (``frozen_encoders``)."""
IMAGE_KEYS = ("camera", "bev")
"""Observation keys the network reads as uint8 0..255 images (scaled by 1/255), whatever the space says."""
TOKEN_KEYS = ("instruction",)
"""Observation keys the network reads as integer token ids."""
NORMALIZE_HINT = ("SB3's VecNormalize normalises every Dict entry by default (and replaces the image entries of the "
                  "space in place): normalise only the float entries, e.g. VecNormalize(venv, norm_obs_keys=['ego']) "
                  "(irlvla_gym.envs.sb3.normalizable_obs_keys(venv.observation_space) lists them)")
"""The fix named by the errors of :func:`check_obs_keys` and :func:`check_obs_values`."""


def check_obs_keys(config: VLAConfig, observation_space: spaces.Space) -> None:
    """Raise ValueError unless every key the network reads is an entry of the (Dict) observation space, with the
    env's kind of space: :data:`IMAGE_KEYS` uint8 0..255 image Boxes, :data:`TOKEN_KEYS` integer Boxes."""
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"VLAPolicy needs a Dict observation space, got {type(observation_space).__name__}")
    missing = [k for k in network_input_keys(config.obs_keys) if k not in observation_space.spaces]
    if missing:
        raise ValueError(f"the VLA network reads {list(config.obs_keys)} but the env observes "
                         f"{sorted(observation_space.spaces)}: make the env with obs_keys including {missing}")
    for key in config.obs_keys:
        space = observation_space.spaces[key]
        if key in IMAGE_KEYS and not is_image_space(space):
            what = "a uint8 0..255 image"
        elif key in TOKEN_KEYS and not (isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.integer)):
            what = "integer token ids"
        else:
            continue
        raise ValueError(f"the VLA network reads observation {key!r} as {what}, but the observation space gives "
                         f"{space}: a wrapper changed it. {NORMALIZE_HINT}")


def check_obs_values(obs: Mapping[str, torch.Tensor], keys: Sequence[str]) -> None:
    """Raise ValueError if an image or token entry of ``obs`` among ``keys`` holds normalised values: floats outside
    0..255 or with fractions (what ``VecNormalize`` returns for entries it should not have normalised). Entries with
    the env's dtypes (uint8, integer) pass without a look at their values; integral float pixels pass too."""
    for key in keys:
        x = obs.get(key)
        if x is None or not torch.is_floating_point(x) or key not in IMAGE_KEYS + TOKEN_KEYS:
            continue
        high = 255.0 if key in IMAGE_KEYS else float("inf")
        if bool(((x < 0) | (x > high) | (x != torch.round(x))).any()):
            what = "uint8 0..255 images" if key in IMAGE_KEYS else "integer token ids"
            raise ValueError(f"observation {key!r} reached the VLA policy as normalised {x.dtype} values (e.g. "
                             f"{x.flatten()[0].item():.4g}), but the network reads it as {what}. {NORMALIZE_HINT}")


def default_config_for(observation_space: spaces.Dict) -> VLAConfig:
    """A default :class:`VLAConfig` reading every supported key the observation space has."""
    keys = tuple(k for k in SUPPORTED_OBS_KEYS if k in observation_space.spaces)
    if not keys:
        raise ValueError(f"the observation space has none of the keys the VLA network reads {SUPPORTED_OBS_KEYS}")
    return VLAConfig(obs_keys=keys)


class VLAFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features extractor wrapping :class:`~irlvla_gym.policies.network.VLAEncoder`.

    ``forward(observations)`` takes SB3-preprocessed Dict observations (tensors, ``(B, ...)``) and returns the fused
    tokens ``(B, T, d)`` (token 0 = pooled plan token); ``features_dim`` = d. With the Gaussian head, which like the
    critic reads token 0 only, it returns that token alone, ``(B, 1, d)`` (``pooled_only``: the last fusion layer
    skips the other tokens' queries and feed-forward, ~a quarter of a PPO minibatch; same numbers up to float
    rounding).

    Args:
        observation_space: the env's Dict space (must contain ``vla_config["obs_keys"]``).
        vla_config: :class:`VLAConfig` or its dict.
        load_pretrained: load ``vision_pretrained_path`` / ``language_pretrained_path`` weights.
    """

    def __init__(self, observation_space: spaces.Dict, vla_config: VLAConfig | Mapping[str, Any] | None = None,
                 load_pretrained: bool = True):
        config = VLAConfig.from_dict(vla_config) if vla_config is not None else default_config_for(observation_space)
        check_obs_keys(config, observation_space)
        super().__init__(observation_space, features_dim=config.hidden)
        self.config = config
        self.encoder = VLAEncoder(config, load_pretrained)
        self.pooled_only = config.head != "diffusion"  # the diffusion head cross-attends to every token

    def forward(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Observations (``camera`` float in [0, 1], or uint8 as :meth:`VLAPolicy.extract_features` passes it)
        -> fused tokens (B, T, d), or (B, 1, d) with ``pooled_only``."""
        inputs = prepare_observations(observations, self.config.obs_keys, raw_camera=True)
        return self.encoder(inputs, pooled_only=self.pooled_only)


class VLALatent(nn.Module):
    """SB3's ``mlp_extractor`` slot for :class:`VLAPolicy` (fused tokens (B, T, d) in).

    ``forward_actor``: the tokens themselves (``actor_tokens=True``, for the planning head) or the pooled token
    (B, d). ``forward_critic``: ``Tanh(Linear(LayerNorm(pooled)))`` (B, d), the value head's input.
    """

    def __init__(self, hidden: int, actor_tokens: bool = True):
        super().__init__()
        self.actor_tokens = actor_tokens
        self.latent_dim_pi = hidden
        self.latent_dim_vf = hidden
        self.critic = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Tanh())

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.actor_tokens else features[:, 0]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.critic(features[:, 0])


class VLAPolicy(ActorCriticPolicy):
    """Actor-critic policy around the VLA network, for SB3's PPO / A2C on the IRL-VLA envs (Dict observations).

    Scales ``camera`` / ``bev`` as uint8 images and reads ``instruction`` as token ids by key, from its own copy of
    the observation space; with SB3's ``VecNormalize`` pass ``norm_obs_keys=["ego"]`` (the default normalises the
    images and token ids too, which raises a ValueError saying so; module docs).

    Args:
        observation_space, action_space, lr_schedule: as for every SB3 policy (PPO passes them).
        vla_config: :class:`VLAConfig` or dict; None: the checkpoint's config (``pretrained_path``) or the default
            config over the supported keys the env observes. With ``pretrained_path`` the given fields override the
            checkpoint's (only non-architectural ones, e.g. ``log_std_init``, make sense).
        pretrained_path: a VLA checkpoint directory (:meth:`VLANetwork.save_pretrained`) or a shipped name
            (``"bc_default"``); its weights are loaded after SB3 built the policy (they survive ``ortho_init``).
        num_threads: torch threads of this process (None: ``$IRLVLA_NUM_THREADS`` or 1); torch is limited to it
            when it uses more.
        log_std_init: overrides the head's initial ``log_std`` (also a checkpoint's) when given.
        frozen_encoders: encoders of :class:`VLAEncoder` kept fixed during RL, a subset of :data:`FREEZABLE`
            (``"vision"``, ``"language"``; their input projections stay trainable). Opt-in speed-up, default
            ``()``: it changes what PPO trains (and so its results); freezing both cut a PPO minibatch's
            forward + backward by ~30% on one core (no backward through the transformers encoders).
        ortho_init: SB3's orthogonal initialisation, applied only to the critic MLP and value head (default False).
        exploration: ``"diagonal"`` (SB3's diagonal Gaussian over the 24 normalised plan numbers, std
            ``exp(log_std)``) or ``"smooth"`` (:class:`~irlvla_gym.policies.exploration.SubspaceGaussianDistribution`:
            Gaussian noise along a few smooth plan changes, longitudinal / lateral acceleration and jerk; sampled
            plans stay comfortable and the learned reward ranks them well), or ``"smooth-speed"`` (the same with the
            lateral stds scaled by the ego's speed, ``ego[:, 20]`` in m/s: a standing car explores almost no lateral
            offset it could not drive; needs the ``ego`` key, un-normalised). Only for the trajectory action space.
        exploration_std: ``"smooth"`` only: initial std of each direction (m/s^2, m/s^3, m/s^2, m/s^3; default
            :data:`irlvla_gym.plans.exploration.SMOOTH_STD`); learned by PPO like ``log_std``.
        exploration_directions: ``"smooth"`` only: the directions explored (default all of
            :data:`irlvla_gym.plans.exploration.SMOOTH_DIRECTIONS`; e.g. ``("lon_acc", "lon_jerk")``: PPO changes
            only the speed profile, never a lateral offset the reward may misjudge). ``exploration_std`` then has
            one entry per given direction.
        **kwargs: the rest of ``ActorCriticPolicy``'s arguments (``optimizer_class``, ``optimizer_kwargs``, ...).
            ``net_arch`` and ``activation_fn`` are ignored (the network is fixed by ``vla_config``).
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Space, lr_schedule: Schedule,
                 vla_config: VLAConfig | Mapping[str, Any] | None = None, pretrained_path: str | None = None,
                 num_threads: int | None = None, log_std_init: float | None = None, ortho_init: bool = False,
                 frozen_encoders: Sequence[str] = (), exploration: str = "diagonal",
                 exploration_std: Sequence[float] | None = None,
                 exploration_directions: Sequence[str] | None = None, **kwargs: Any):
        from irlvla_gym.policies.exploration import EXPLORATIONS
        from irlvla_gym.utils import limit_torch_threads

        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration {exploration!r}: choose from {EXPLORATIONS}")
        from irlvla_gym.policies.exploration import SUBSPACE_EXPLORATIONS, smooth_log_std_init

        if exploration in SUBSPACE_EXPLORATIONS and log_std_init is not None:
            raise ValueError("log_std_init sets the diagonal Gaussian's std; with exploration='smooth' "
                             "pass exploration_std instead")
        if exploration not in SUBSPACE_EXPLORATIONS and (exploration_std, exploration_directions) != (None, None):
            raise ValueError(f"exploration_std and exploration_directions apply only to exploration in "
                             f"{SUBSPACE_EXPLORATIONS}")
        # Our own copy: wrappers such as VecNormalize edit the env's space in place, SB3 preprocesses by the space.
        observation_space = copy.deepcopy(observation_space)

        wanted = int(num_threads or os.environ.get("IRLVLA_NUM_THREADS", 1))
        if torch.get_num_threads() > wanted:
            limit_torch_threads(wanted)
        if kwargs.get("share_features_extractor") is False:
            raise ValueError("VLAPolicy shares one VLA encoder between actor and critic (share_features_extractor)")
        if kwargs.get("normalize_images") is False:
            raise ValueError("VLAPolicy expects SB3 to scale uint8 images to [0, 1] (normalize_images=True)")
        for ignored in ("features_extractor_class", "features_extractor_kwargs", "net_arch"):
            kwargs.pop(ignored, None)

        self.pretrained_path = None if pretrained_path is None else str(pretrained_path)
        if self.pretrained_path is not None:
            if isinstance(vla_config, VLAConfig):
                raise ValueError("with pretrained_path, pass vla_config as a dict of fields to override (or None)")
            config = VLAConfig.load(resolve_checkpoint(self.pretrained_path)).to_dict()
            config.update(dict(vla_config or {}))
            config = VLAConfig.from_dict(config)
        elif vla_config is not None:
            config = VLAConfig.from_dict(vla_config)
        else:
            config = default_config_for(observation_space)
        check_obs_keys(config, observation_space)
        self.vla_config = config
        self.num_threads = num_threads
        self.frozen_encoders = tuple(str(name) for name in frozen_encoders)
        unknown = [n for n in self.frozen_encoders if n not in FREEZABLE]
        if unknown:
            raise ValueError(f"frozen_encoders {unknown}: choose from {FREEZABLE}")
        self._log_std_override = log_std_init
        self._plan_head = isinstance(action_space, spaces.Box) and action_space.shape == (ACTION_DIM,)
        if exploration in SUBSPACE_EXPLORATIONS and not self._plan_head:
            raise ValueError(f"exploration={exploration!r} needs the 24-dim trajectory action space "
                             "(action_type='trajectory')")
        if exploration == "smooth-speed" and "ego" not in config.obs_keys:
            raise ValueError("exploration='smooth-speed' reads the ego's speed: add 'ego' to the obs_keys")
        self._exploration_speed: torch.Tensor | None = None  # (B,) m/s of the last extract_features batch
        self.exploration = exploration
        self.exploration_std = None if exploration_std is None else tuple(float(v) for v in exploration_std)
        self.exploration_directions = (None if exploration_directions is None else
                                       tuple(str(d) for d in exploration_directions))
        if self.exploration_directions is not None:
            smooth_log_std_init(self.exploration_std, self.exploration_directions)  # the argument errors, early
        super().__init__(
            observation_space, action_space, lr_schedule, net_arch=[],
            log_std_init=config.log_std_init if log_std_init is None else log_std_init, ortho_init=ortho_init,
            features_extractor_class=VLAFeaturesExtractor,
            features_extractor_kwargs=dict(vla_config=config, load_pretrained=self.pretrained_path is None),
            **kwargs,
        )
        if self.pretrained_path is not None:
            self.load_pretrained(self.pretrained_path)
        if log_std_init is not None and self._plan_head:
            with torch.no_grad():
                self.log_std.fill_(float(log_std_init))
        encoder = self.features_extractor.encoder
        for name in self.frozen_encoders:
            if not hasattr(encoder, name):
                raise ValueError(f"frozen_encoders: the network has no {name} encoder (obs_keys {config.obs_keys})")
            getattr(encoder, name).requires_grad_(False)  # no gradients: the optimizer and grad clipping skip them

    # ---- building ------------------------------------------------------------------------------------------------

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = VLALatent(self.vla_config.hidden, actor_tokens=self._plan_head)

    def _build(self, lr_schedule: Schedule) -> None:
        """Heads, value net and optimizer. Unlike SB3's ``_build``, orthogonal init (``ortho_init``) is applied to the
        critic MLP and the value head only: the transformers encoders and the planning head keep their own init."""
        from functools import partial

        self._build_mlp_extractor()
        d = self.vla_config.hidden
        if self._plan_head and self.exploration in ("smooth", "smooth-speed"):
            from irlvla_gym.plans.exploration import smooth_basis
            from irlvla_gym.policies.exploration import SubspaceGaussianDistribution, smooth_log_std_init

            directions = self.smooth_directions
            self.action_dist = SubspaceGaussianDistribution(smooth_basis(directions), ACTION_DIM)
            self.action_net = make_head(self.vla_config)  # its own (24,) log_std stays the checkpoint's, unused here
            self.log_std = nn.Parameter(smooth_log_std_init(self.exploration_std, directions))
        elif self._plan_head and isinstance(self.action_dist, DiagGaussianDistribution):
            self.action_net = make_head(self.vla_config)
            with torch.no_grad():
                self.action_net.log_std.fill_(float(self.log_std_init))
            self.log_std = self.action_net.log_std  # one Parameter, registered under both names
        elif isinstance(self.action_dist, DiagGaussianDistribution):
            self._plan_head = False
            self.mlp_extractor.actor_tokens = False
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(d, log_std_init=self.log_std_init)
        elif hasattr(self.action_dist, "proba_distribution_net") and not self.use_sde:
            self.action_net = self.action_dist.proba_distribution_net(latent_dim=d)
        else:
            raise NotImplementedError(f"VLAPolicy does not support {type(self.action_dist).__name__}")
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            self.mlp_extractor.critic.apply(partial(self.init_weights, gain=np.sqrt(2)))
            self.value_net.apply(partial(self.init_weights, gain=1.0))
            if not self._plan_head:
                self.action_net.apply(partial(self.init_weights, gain=0.01))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for k in ("features_extractor_class", "features_extractor_kwargs", "net_arch", "activation_fn"):
            data.pop(k, None)
        # The saved policy rebuilds from the full config (sub-model configs included) and needs no checkpoint.
        config = self.vla_config.to_dict()
        config["vision_pretrained_path"] = config["language_pretrained_path"] = None
        data.update(vla_config=config, pretrained_path=None, num_threads=self.num_threads,
                    frozen_encoders=self.frozen_encoders, exploration=self.exploration,
                    exploration_std=self.exploration_std, exploration_directions=self.exploration_directions)
        if self.exploration != "diagonal":  # the smooth std is exploration_std (and the saved log_std)
            data["log_std_init"] = None
        return data

    def extract_features(self, obs: Mapping[str, torch.Tensor],
                         features_extractor: BaseFeaturesExtractor | None = None) -> torch.Tensor:
        """SB3's preprocessing (``preprocess_obs``) of every key but a uint8 ``camera``, which reaches the extractor
        as uint8 (B, 3, H, W): the encoder resizes it in integers and scales it once (same pixels up to ~2e-7).
        SB3's ``float() / 255`` of the full-size image before the resize was the largest single cost of a PPO
        minibatch (the rollout buffer keeps uint8 observations, so every minibatch paid it again).

        Normalised image or token entries (``VecNormalize`` defaults) raise ValueError (:func:`check_obs_values`)."""
        extractor = self.features_extractor if features_extractor is None else features_extractor
        if isinstance(obs, Mapping):
            check_obs_values(obs, self.vla_config.obs_keys)
            self._remember_speed(obs)
        camera = obs.get("camera") if isinstance(obs, Mapping) else None
        if camera is None or camera.dtype != torch.uint8:
            return super().extract_features(obs, extractor)
        rest = {k: v for k, v in obs.items() if k != "camera"}
        space = spaces.Dict({k: self.observation_space[k] for k in rest})
        return extractor({**preprocess_obs(rest, space, normalize_images=self.normalize_images), "camera": camera})

    def forward(self, obs: Mapping[str, torch.Tensor], deterministic: bool = False):
        """SB3's forward (actions, values, log-probabilities); also records ``last_forward = (obs, mean actions)``
        so a self-critical reward baseline can score the mean plan of the same rollout step without another
        forward pass (``baselines.envs.policy_mean_actions``)."""
        out = super().forward(obs, deterministic)
        self.last_forward = (obs, self.action_dist.mode().detach())
        return out

    @property
    def smooth_directions(self) -> tuple[str, ...]:
        """The explored smooth directions (``exploration_directions``, default all)."""
        from irlvla_gym.plans.exploration import SMOOTH_DIRECTIONS

        return self.exploration_directions or SMOOTH_DIRECTIONS

    def _remember_speed(self, obs: Mapping[str, torch.Tensor]) -> None:
        if self.exploration == "smooth-speed":  # SB3 builds the action distribution from this batch next
            self._exploration_speed = obs["ego"][:, SPEED_INDEX].float()

    def get_distribution(self, obs: Mapping[str, torch.Tensor]):
        # SB3's get_distribution calls BasePolicy.extract_features, not ours
        if isinstance(obs, Mapping):
            self._remember_speed(obs)
        return super().get_distribution(obs)

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor):
        if self.exploration != "smooth-speed":
            return super()._get_action_dist_from_latent(latent_pi)
        from irlvla_gym.plans.exploration import direction_speed_factors

        speed = self._exploration_speed
        if speed is None or speed.shape[0] != latent_pi.shape[0]:
            raise RuntimeError("exploration='smooth-speed': no ego speed for this batch (extract_features was not "
                               "called on it)")
        log_std = self.log_std + torch.log(direction_speed_factors(speed.to(latent_pi), self.smooth_directions))
        return self.action_dist.proba_distribution(self.action_net(latent_pi), log_std)

    # ---- the network view ----------------------------------------------------------------------------------------

    @property
    def network(self) -> VLANetwork:
        """The policy's VLA network (encoder + planning head; the modules are shared, not copied): use it for
        ``save_pretrained`` or plan queries. Only for the 24-dim trajectory action space."""
        if not self._plan_head:
            raise ValueError("this VLAPolicy has no planning head (action space is not the 24-dim trajectory Box)")
        return VLANetwork(self.vla_config, encoder=self.features_extractor.encoder, head=self.action_net)

    def load_pretrained(self, path: str) -> None:
        """Load a VLA checkpoint's weights into the encoder (and the planning head when there is one)."""
        from safetensors.torch import load_file

        state = load_file(str(resolve_checkpoint(path) / WEIGHTS_NAME), device=str(self.device))
        if self._plan_head:
            self.network.load_state_dict(state, strict=True)
        else:
            enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
            self.features_extractor.encoder.load_state_dict(enc, strict=True)


__all__ = ["FREEZABLE", "IMAGE_KEYS", "NORMALIZE_HINT", "TOKEN_KEYS", "VLAFeaturesExtractor", "VLALatent", "VLAPolicy",
           "check_obs_keys", "check_obs_values", "default_config_for"]
