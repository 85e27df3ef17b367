"""Baseline agents for tiltenv: the leaderboard's first entries and reference implementations.

Every agent follows one protocol (:mod:`baselines.base`): ``fit(task, budget, checkpoint)`` on the public
task, then ``policy(candidates, ref_logp) -> (C, K)`` log-probabilities. Each baseline is one file with a
config dataclass (TRL style: every field has help text, validated in ``__post_init__``):

=============  ===================================================================================
name           agent
=============  ===================================================================================
``tilt``       closed-form tilt ``π_ref e^{r̂/β}`` of the proxy (or the χ² closed form)
``best_of_n``  exact best-of-n over the K candidates
``reinforce``  REINFORCE, KL in the reward (Williams 1992; Ziegler et al. 2019)
``rloo``       k samples per context, leave-one-out baseline (Ahmadian et al. 2024)
``grpo``       group-normalized advantages, clipped ratio, k3 in the loss (Shao et al. 2024)
``ppo``        clipped surrogate, several epochs per batch (Schulman et al. 2017)
``dpo``        DPO / IPO / hinge / robust on the preference data (Rafailov et al. 2023)
``sb3_ppo``    ``stable_baselines3.PPO`` through ``gym.make``
``label_ceiling``  reference entry: maximum-likelihood fit of θ and the gold family on the labels, tilted
=============  ===================================================================================

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines import BASELINES, TrainBudget
    >>> agent_cls, config_cls = BASELINES["grpo"]
    >>> env = gym.make("tiltenv/SingleIndex-v0", d=4, K=8, n_labels=200, n_eval_contexts=128)
    >>> agent = agent_cls(config_cls(device="cpu")).fit(env.unwrapped.task, TrainBudget(proxy_queries=4096))
    >>> agent.policy(*env.unwrapped.task.sample_contexts(2, seed=0)).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from baselines.base import QUICK_BUDGET, Agent, Checkpointer, TrainBudget, log_spaced_points
from baselines.best_of_n import BestOfN, BestOfNConfig, n_sweep
from baselines.dpo import DPO, DPOConfig
from baselines.grpo import GRPO, GRPOConfig
from baselines.label_ceiling import LabelCeiling, LabelCeilingConfig
from baselines.policy import Policy, PolicySnapshot
from baselines.ppo import PPO, PPOConfig
from baselines.reinforce import REINFORCE, REINFORCEConfig
from baselines.rloo import RLOO, RLOOConfig
from baselines.sb3_ppo import SB3PPO, SB3PPOConfig
from baselines.tilt import Tilt, TiltConfig, beta_sweep, chi2_tilt_logp
from baselines.token_dpo import TokenDPO, TokenDPOConfig  # token-level (tiltenv/Tokens-v0): not bandit agents
from baselines.token_pg import TokenPG, TokenPGConfig
from baselines.token_agents import TOKEN_BASELINES  # noqa: E402  (token-level built-in entries: token tasks only)

__all__ = [
    "BASELINES",
    "TOKEN_BASELINES",
    "ALL_BASELINES",
    "PG_BASELINES",
    "get_baseline",
    "make_agent",
    "Agent",
    "TrainBudget",
    "QUICK_BUDGET",
    "Checkpointer",
    "log_spaced_points",
    "Policy",
    "PolicySnapshot",
    "Tilt",
    "TiltConfig",
    "beta_sweep",
    "chi2_tilt_logp",
    "BestOfN",
    "BestOfNConfig",
    "n_sweep",
    "REINFORCE",
    "REINFORCEConfig",
    "RLOO",
    "RLOOConfig",
    "GRPO",
    "GRPOConfig",
    "PPO",
    "PPOConfig",
    "DPO",
    "DPOConfig",
    "SB3PPO",
    "SB3PPOConfig",
    "LabelCeiling",
    "LabelCeilingConfig",
    "TokenPG",
    "TokenPGConfig",
    "TokenDPO",
    "TokenDPOConfig",
]

#: name -> (agent class, config class).
BASELINES: dict[str, tuple[type[Agent], type]] = {
    cls.name: (cls, cls.config_class) for cls in (Tilt, BestOfN, REINFORCE, RLOO, GRPO, PPO, DPO, SB3PPO, LabelCeiling)
}
#: Every built-in agent: the bandit agents above (which also run on a token task's bandit view, K = V^L) and the
#: token-level ones (:mod:`baselines.token_agents`: sequence policies, token tasks only).
ALL_BASELINES: dict[str, tuple[type, type]] = {**BASELINES, **TOKEN_BASELINES}
#: The torch policy-gradient agents.
PG_BASELINES = ("reinforce", "rloo", "grpo", "ppo")


def get_baseline(name: str) -> tuple[type[Agent], type]:
    """``(agent class, config class)`` of a registered baseline; a wrong name gets the closest valid one."""
    from tiltenv._validation import suggest

    try:
        return ALL_BASELINES[name]
    except (KeyError, TypeError):
        raise ValueError(f"baseline must be one of {sorted(ALL_BASELINES)} (got {name!r})."
                         + suggest(str(name), ALL_BASELINES)) from None


def make_agent(name: str, **config: object) -> Agent:
    """Build a registered baseline from config keyword arguments: ``make_agent("grpo", beta=0.1)``."""
    agent_cls, config_cls = get_baseline(name)
    return agent_cls(**config)  # Agent.__init__ names an unknown field with the closest valid one
