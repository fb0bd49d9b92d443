"""``dppo-vla-rwm``: the VLA's diffusion head fine-tuned by PPO over its denoising chain (DPPO, Ren et al. 2024).

A CleanRL-style loop in one file: the agent, then ``train_dppo`` (collect -> advantages -> update ->
log/checkpoint), top to bottom; the hyperparameters are :class:`baselines.config.DPPOConfig` (the ``dppo:`` section
of the run config).

**The denoising chain as the policy.** The diffusion head (:class:`irlvla_gym.policies.DiffusionHead`) turns
x_K = 0 into a plan by K deterministic DDIM steps ``x_{j} = mu_theta(x_{j+1}, j)`` (x0-prediction, j = K-1 .. 0;
the last step's mean is the predicted x0 itself). DPPO makes the *last* ``k = ft_denoising_steps`` steps stochastic,
``x_j ~ N(mu_theta(x_{j+1}, j), sigma^2 I)`` with a fixed ``sigma = denoise_std`` (normalised action units), and
treats each of them as an action of an inner MDP whose reward is the env reward of the final plan x_0. So each of
the k steps has a Gaussian log-likelihood ``log N(x_j; mu_theta(x_{j+1}, j), sigma^2)``, PPO's ratio and clipping
are applied per step with the plan's advantage, and only those k steps are recomputed with gradients: the first
K - k steps run without gradients and without noise (their parameters are shared, but their *outputs* are
constants, so the time embeddings of steps j >= k receive no gradient). Evaluation uses the noise-free chain, i.e.
exactly ``DiffusionHead.forward`` (the leaderboard plans with ``VLANetwork.plan``).

**Critic.** ``LayerNorm -> Linear -> Tanh -> Linear`` on the pooled fused token of the shared VLA encoder.

**Batches and instruction lengths.** The encoder trims instruction padding per batch and the diffusion head
cross-attends to every token, so rows are encoded in groups of equal instruction length
(:func:`baselines.common.length_groups`): every scene gets exactly its stand-alone tokens, and the update's
log-likelihoods equal the rollout's before the first gradient step.

Every plan-once episode is one env step, so the advantage is ``r - V(s)``; the GAE code below handles longer
episodes too (bootstrapping from the observation after the last step; truncations are treated as terminations).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from baselines.common import length_groups, read_json, seed_everything, write_json
from baselines.config import DPPOConfig, RunConfig

# =====================================================================================================================
# Agent: VLA encoder + diffusion head (actor over the denoising chain) + critic
# =====================================================================================================================


class DiffusionAgent(nn.Module):
    """The DPPO actor-critic around a diffusion-head :class:`~irlvla_gym.policies.VLANetwork` (module docs).

    Args:
        network: the VLA network (``config.head == "diffusion"``); its modules are shared, not copied.
        ft_denoising_steps: k, trained steps (the last k of the K denoising steps).
        denoise_std: sigma of each trained step.
    """

    def __init__(self, network: Any, ft_denoising_steps: int = 4, denoise_std: float = 0.05):
        super().__init__()
        if network.config.head != "diffusion":
            raise ValueError(f"DPPO needs a diffusion-head VLA network, got head={network.config.head!r}")
        self.network = network
        self.K = int(network.head.steps)
        self.k = int(ft_denoising_steps)
        if not 1 <= self.k <= self.K:
            raise ValueError(f"ft_denoising_steps must be in [1, {self.K}], got {self.k}")
        self.std = float(denoise_std)
        d = network.config.hidden
        self.critic = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))

    @property
    def obs_keys(self) -> tuple[str, ...]:
        return self.network.obs_keys

    @property
    def input_keys(self) -> tuple[str, ...]:
        """The env entries the network reads: its keys and the masks of vector sets."""
        from irlvla_gym.policies.config import network_input_keys

        return network_input_keys(self.network.obs_keys)

    # ---- building blocks ----------------------------------------------------------------------------------------

    def encode(self, obs: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Fused tokens per instruction-length group: [(rows, tokens (len(rows), T, d)), ...]."""
        from irlvla_gym.policies import prepare_observations

        n = len(next(iter(obs.values())))
        groups = length_groups(obs.get("instruction"), n)
        return [(rows, self.network.encoder(prepare_observations({k: obs[k][rows] for k in self.input_keys},
                                                                 self.obs_keys))) for rows in groups]

    def step_mean(self, x: torch.Tensor, j: int, tokens: torch.Tensor) -> torch.Tensor:
        """Mean of x_j given x_{j+1} = ``x`` (B, 24): one deterministic DDIM step at step index ``j``."""
        head = self.network.head
        abar = head.alphas_cumprod
        t = torch.full((x.shape[0],), j, dtype=torch.long, device=x.device)
        x0 = head.denoise(x, t, tokens).clamp(-1.0, 1.0)
        if j == 0:
            return x0
        eps = (x - abar[j].sqrt() * x0) / (1 - abar[j]).sqrt()
        return abar[j - 1].sqrt() * x0 + (1 - abar[j - 1]).sqrt() * eps

    def log_prob(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) log N(x; mean, std^2 I) summed over the 24 dimensions."""
        return torch.distributions.Normal(mean, self.std).log_prob(x).sum(-1)

    # ---- rollout ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False,
            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Run the chain for a batch of observations.

        Returns ``action`` (B, 24) = x_0, ``chain_in`` / ``chain_out`` (B, k, 24) = x_{j+1} / x_j of the trained
        steps (j = k-1 .. 0), ``log_prob`` (B, k) per-step log-likelihoods, ``value`` (B,).
        """
        n = len(next(iter(obs.values())))
        out = {"action": torch.zeros(n, 24), "chain_in": torch.zeros(n, self.k, 24),
               "chain_out": torch.zeros(n, self.k, 24), "log_prob": torch.zeros(n, self.k), "value": torch.zeros(n)}
        for rows, tokens in self.encode(obs):
            idx = torch.from_numpy(rows)
            x = tokens.new_zeros(len(rows), 24)
            for j in range(self.K - 1, -1, -1):
                mean = self.step_mean(x, j, tokens)
                if j >= self.k:  # frozen part of the chain: deterministic, never trained
                    x = mean
                    continue
                i = self.k - 1 - j
                noise = torch.randn(mean.shape, generator=generator) if not deterministic else torch.zeros_like(mean)
                x_next = mean + self.std * noise
                out["chain_in"][idx, i] = x
                out["chain_out"][idx, i] = x_next
                out["log_prob"][idx, i] = self.log_prob(mean, x_next)
                x = x_next
            out["action"][idx] = x
            out["value"][idx] = self.critic(tokens[:, 0]).squeeze(-1)
        return out

    # ---- update -------------------------------------------------------------------------------------------------

    def evaluate(self, obs: Mapping[str, np.ndarray], chain_in: torch.Tensor,
                 chain_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step log-likelihoods (B, k) of stored chains under the current parameters, and values (B,); with
        gradients through the k trained steps only."""
        n = chain_in.shape[0]
        log_prob = chain_in.new_zeros(n, self.k)
        value = chain_in.new_zeros(n)
        for rows, tokens in self.encode(obs):
            idx = torch.from_numpy(rows)
            cols = []
            for i in range(self.k):
                j = self.k - 1 - i
                mean = self.step_mean(chain_in[idx, i], j, tokens)
                cols.append(self.log_prob(mean, chain_out[idx, i]))
            log_prob = log_prob.index_put((idx,), torch.stack(cols, dim=1))
            value = value.index_put((idx,), self.critic(tokens[:, 0]).squeeze(-1))
        return log_prob, value

    def value(self, obs: Mapping[str, np.ndarray]) -> torch.Tensor:
        n = len(next(iter(obs.values())))
        value = torch.zeros(n)
        for rows, tokens in self.encode(obs):
            value[torch.from_numpy(rows)] = self.critic(tokens[:, 0]).squeeze(-1)
        return value

    def anchor_loss(self, obs: Mapping[str, np.ndarray], actions: np.ndarray, kind: str = "mse") -> torch.Tensor:
        """BC anchor (:class:`baselines.anchor.BCAnchor` calls this): the head's denoising loss on expert actions."""
        target = torch.as_tensor(np.asarray(actions, np.float32))
        losses = [self.network.head.bc_loss(tokens, target[torch.from_numpy(rows)])["loss"] * len(rows)
                  for rows, tokens in self.encode(obs)]
        return torch.stack(losses).sum() / len(target)

    @torch.no_grad()
    def plan(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Deterministic plans (B, 8, 3) (the noise-free chain = ``DiffusionHead.forward``)."""
        from irlvla_gym.plans.codec import action_to_plan

        return action_to_plan(self.act(obs, deterministic=True)["action"].numpy())


# =====================================================================================================================
# Checkpoints (safetensors + json)
# =====================================================================================================================


def save_checkpoint(path: Path, agent: DiffusionAgent, optimizer: torch.optim.Optimizer,
                    state: Mapping[str, Any]) -> None:
    """``agent.safetensors``, ``optimizer.safetensors`` and ``state.json`` (written last) in ``path``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in agent.state_dict().items()}, str(path / "agent.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{pid}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
               for pid, st in opt["state"].items() for name, v in st.items()}
    save_file(tensors or {"_empty": torch.zeros(1)}, str(path / "optimizer.safetensors"))
    write_json(path / "state.json", {**state, "param_groups": opt["param_groups"]})


def load_checkpoint(path: Path, agent: DiffusionAgent, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    agent.load_state_dict(load_file(str(path / "agent.safetensors")))
    state = read_json(path / "state.json")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path / "optimizer.safetensors")).items():
        if key == "_empty":
            continue
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return state


# =====================================================================================================================
# Training loop
# =====================================================================================================================


def train_dppo(cfg: RunConfig, seed: int, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one DPPO run; files as the SB3 runs' (``checkpoint/``, ``curve.csv``, ``tb/``,
    ``network/``)."""
    from tqdm.auto import tqdm

    from baselines.envs import env_kwargs, make_gym_vector_env, make_reward
    from baselines.hooks import CurveWriter, HookRunner, PolicySnapshot, load_hooks
    from irlvla_gym.obs.config import ObsConfig

    hp = cfg.dppo
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoint"
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)

    # ---- env, agent, optimizer (or resume) ----------------------------------------------------------------------
    reward = make_reward(cfg)
    envs = make_gym_vector_env(cfg, reward)
    agent, optimizer, anchor = _make_agent(cfg, hp, seed)
    state: dict[str, Any] = {"step": 0, "wall_s": 0.0, "env_s": 0.0, "update": 0}
    if (ckpt_dir / "state.json").is_file():
        state = load_checkpoint(ckpt_dir, agent, optimizer)
        print(f"resuming {run_dir} from step {state['step']}")
    step, env_s, wall_offset = int(state["step"]), float(state["env_s"]), float(state["wall_s"])

    # ---- logging, hooks -------------------------------------------------------------------------------------------
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb" / "dppo"))
    curve = CurveWriter(run_dir / "curve.csv")
    curve.truncate(step)
    obs_config = ObsConfig.from_dict(cfg.env.get("obs_config"))

    def snapshot() -> PolicySnapshot:
        return PolicySnapshot(step, agent, agent.plan, agent.obs_keys, obs_config, env_kwargs(cfg, reward), run_dir,
                              lambda name, value: writer.add_scalar(name, value, step))

    hooks = HookRunner(load_hooks(cfg.hooks, source=f"the {cfg.variant} config"), cfg.hook_interval)
    hooks.last = step
    t0 = time.perf_counter()
    wall = lambda: wall_offset + time.perf_counter() - t0  # noqa: E731

    # ---- loop: collect -> advantages -> update -> log / checkpoint / hooks ------------------------------------------
    obs, _ = envs.reset(seed=seed + 1000 * int(state["update"]))
    bar = tqdm(total=cfg.total_timesteps, initial=step, desc=f"{cfg.variant} s{seed}", unit="step",
               disable=not progress, mininterval=2, dynamic_ncols=True)
    while step < cfg.total_timesteps:
        batch, obs, seconds = _collect(agent, envs, obs, hp.n_steps, generator, bar)
        step, env_s = step + hp.n_steps * envs.num_envs, env_s + seconds
        advantages, returns = _advantages(agent, obs, batch, hp)
        logs = _update(agent, optimizer, anchor, batch, advantages, returns, hp, [seed, int(state["update"])])
        state["update"] = int(state["update"]) + 1
        rewards = batch["rewards"]
        writer.add_scalar("rollout/reward_mean", rewards.mean().item(), step)
        for key, vals in logs.items():
            if vals:
                writer.add_scalar(f"train/{key}", float(np.mean(vals)), step)
        writer.add_scalar("time/env_seconds", env_s, step)
        curve.add(step, rewards.numpy(), wall())
        bar.set_postfix(reward=f"{rewards.mean().item():.3f}")
        if step - int(state["step"]) >= cfg.checkpoint_every or step >= cfg.total_timesteps:
            state.update(step=step, wall_s=wall(), env_s=env_s)
            save_checkpoint(ckpt_dir, agent, optimizer, state)
        hooks.maybe_run(step, snapshot)
    bar.close()
    hooks.finish(snapshot)
    writer.close()
    envs.close()

    # ---- final files: the fine-tuned network (evaluated like any VLA network) ----------------------------------------
    agent.network.save_pretrained(run_dir / "network")
    write_json(run_dir / "dppo_config.json", asdict(hp))
    return {"steps": step, "wall_s": wall(), "env_s": env_s, "vec_env": "native-gym", "finished_at": time.time()}


def _make_agent(cfg: RunConfig, hp: DPPOConfig, seed: int) -> tuple[DiffusionAgent, torch.optim.Optimizer, Any]:
    """The agent around the run's pretrained diffusion-head network, its Adam (actor and critic learning rates) and
    the BC anchor (None when ``bc_weight`` is 0)."""
    from baselines.anchor import make_anchor
    from baselines.pretrain import resolve_pretrained
    from irlvla_gym.policies import VLANetwork

    network = VLANetwork.from_pretrained(resolve_pretrained(cfg.pretrained or "bc_diffusion"))
    agent = DiffusionAgent(network, hp.ft_denoising_steps, hp.denoise_std)
    if hp.freeze_encoder:
        network.encoder.requires_grad_(False)
    actor_params = [p for n, p in network.named_parameters() if p.requires_grad and not n.endswith("log_std")]
    optimizer = torch.optim.Adam([{"params": actor_params, "lr": hp.learning_rate},
                                  {"params": agent.critic.parameters(), "lr": hp.critic_learning_rate}], eps=1e-5)
    anchor = make_anchor({"weight": hp.bc_weight, "batch_size": hp.bc_batch_size, "kind": "mse",
                          "num_scenes": cfg.bc.num_scenes}, cfg.env, seed=seed)
    return agent, optimizer, anchor


def _collect(agent: DiffusionAgent, envs: Any, obs: Any, n_steps: int, generator: torch.Generator,
             bar: Any) -> tuple[dict[str, Any], Any, float]:
    """One rollout of ``n_steps`` steps per env: (buffers, the observation after it, seconds inside the env).
    Buffers: ``obs`` (list of per-step observation dicts), ``chain_in`` / ``chain_out`` (T, n_envs, k, 24),
    ``log_prob`` (T, n_envs, k), ``values``, ``rewards``, ``dones`` (T, n_envs)."""
    T, n_envs = n_steps, envs.num_envs
    batch: dict[str, Any] = {"obs": [], "chain_in": torch.zeros(T, n_envs, agent.k, 24),
                             "chain_out": torch.zeros(T, n_envs, agent.k, 24),
                             "log_prob": torch.zeros(T, n_envs, agent.k), "values": torch.zeros(T, n_envs),
                             "rewards": torch.zeros(T, n_envs), "dones": torch.zeros(T, n_envs)}
    env_s = 0.0
    agent.eval()
    for t in range(T):
        out = agent.act(obs, generator=generator)
        batch["obs"].append({k: np.asarray(obs[k]) for k in agent.input_keys})
        for key, name in (("chain_in", "chain_in"), ("chain_out", "chain_out"), ("log_prob", "log_prob"),
                          ("values", "value")):
            batch[key][t] = out[name]
        t_env = time.perf_counter()
        obs, reward_t, terminated, truncated, _ = envs.step(out["action"].clamp(-1, 1).numpy())
        env_s += time.perf_counter() - t_env
        batch["rewards"][t] = torch.as_tensor(reward_t, dtype=torch.float32)
        batch["dones"][t] = torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32)
        bar.update(n_envs)
    return batch, obs, env_s


def _advantages(agent: DiffusionAgent, next_obs: Any, batch: Mapping[str, Any],
                hp: DPPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (T, n_envs), bootstrapping from the observation after the rollout (one-step
    episodes give r - V)."""
    values, rewards, dones = batch["values"], batch["rewards"], batch["dones"]
    T = len(values)
    with torch.no_grad():
        next_value = agent.value(next_obs)
    advantages = torch.zeros_like(values)
    last = torch.zeros(values.shape[1])
    for t in reversed(range(T)):
        nv = next_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + hp.gamma * nv * (1 - dones[t]) - values[t]
        last = delta + hp.gamma * hp.gae_lambda * (1 - dones[t]) * last
        advantages[t] = last
    return advantages, advantages + values


def _update(agent: DiffusionAgent, optimizer: torch.optim.Optimizer, anchor: Any, batch: Mapping[str, Any],
            advantages: torch.Tensor, returns: torch.Tensor, hp: DPPOConfig,
            order_seed: list[int]) -> dict[str, list[float]]:
    """PPO epochs over the trained denoising steps of one rollout; returns the per-minibatch logs. The minibatch
    order depends on ``order_seed`` (run seed, update index) and the epoch, so a resumed run repeats it."""
    k = agent.k
    flat_obs = {key: np.concatenate([o[key] for o in batch["obs"]]) for key in agent.input_keys}
    rollout = len(advantages.reshape(-1))
    b_in, b_out = batch["chain_in"].reshape(rollout, k, 24), batch["chain_out"].reshape(rollout, k, 24)
    b_logp, b_adv, b_ret = batch["log_prob"].reshape(rollout, k), advantages.reshape(-1), returns.reshape(-1)
    agent.train()
    logs: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": [],
                                    "anchor_loss": []}
    for epoch in range(hp.n_epochs):
        order = np.random.default_rng([*order_seed, epoch]).permutation(rollout)
        for s in range(0, rollout, hp.batch_size):
            mb = np.sort(order[s:s + hp.batch_size])
            mb_t = torch.from_numpy(mb)
            new_logp, new_value = agent.evaluate({key: v[mb] for key, v in flat_obs.items()}, b_in[mb_t], b_out[mb_t])
            log_ratio = new_logp - b_logp[mb_t]  # (B, k): one ratio per denoising step
            ratio = log_ratio.exp()
            adv = b_adv[mb_t]
            if hp.normalize_advantage and len(adv) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            adv = adv[:, None]  # the plan's advantage, shared by its denoising steps
            policy_loss = -torch.min(adv * ratio, adv * ratio.clamp(1 - hp.clip_range, 1 + hp.clip_range)).mean()
            value_loss = 0.5 * (new_value - b_ret[mb_t]).pow(2).mean()
            loss = policy_loss + hp.vf_coef * value_loss
            if anchor is not None:
                anchor_loss, _ = anchor.loss(agent)
                loss = loss + anchor.weight * anchor_loss
                logs["anchor_loss"].append(anchor_loss.item())
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], hp.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean().item()
            logs["policy_loss"].append(policy_loss.item())
            logs["value_loss"].append(value_loss.item())
            logs["clip_fraction"].append(((ratio - 1).abs() > hp.clip_range).float().mean().item())
            logs["approx_kl"].append(approx_kl)
            if hp.target_kl is not None and approx_kl > 1.5 * hp.target_kl:
                return logs  # early stop of this update
    return logs


__all__ = ["DPPOConfig", "DiffusionAgent", "train_dppo"]
