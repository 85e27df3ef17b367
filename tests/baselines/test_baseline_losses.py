"""The PG losses against their formulas on hand-made batches (mutations a training test cannot see)."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.grpo import GRPO
from baselines.pg import Rollout
from baselines.ppo import PPO


def _rollout(rewards: torch.Tensor, weights: torch.Tensor | None = None, exact: bool = False) -> Rollout:
    C, K = rewards.shape
    ref = torch.full((C, K), -math.log(K), dtype=torch.float64)
    w = torch.full((C, K), 1.0 / K, dtype=torch.float64) if weights is None else weights
    return Rollout(candidates=torch.zeros(C, K, 1, dtype=torch.float64), ref_logp=ref, old_logp=ref.clone(),
                   actions=torch.arange(K).expand(C, K).clone(), weights=w, proxy=rewards, rewards=rewards,
                   exact=exact)


@pytest.mark.parametrize("agent_cls", [PPO, GRPO])
def test_clipped_surrogate_has_zero_gradient_outside_the_trust_region_in_the_advantages_direction(agent_cls):
    agent = agent_cls()
    agent.beta_ = 0.0  # the surrogate alone
    eps = 0.2
    ro = _rollout(torch.zeros(1, 4, dtype=torch.float64))
    # log-ratios: beyond 1+ε, inside, beyond 1−ε, inside
    shift = torch.tensor([[math.log(1.5), math.log(1.1), math.log(0.5), math.log(0.9)]], dtype=torch.float64)
    for sign in (1.0, -1.0):
        adv = sign * torch.ones(1, 4, dtype=torch.float64)
        logp = (ro.old_logp + shift).requires_grad_(True)
        loss, _ = agent.loss(logp, ro, adv)
        (grad,) = torch.autograd.grad(loss, logp)
        g = grad[0]
        moved_with_adv = 0 if sign > 0 else 2  # ratio already past the clip in the advantage's direction
        moved_against = 2 if sign > 0 else 0
        assert g[moved_with_adv] == 0.0, (sign, g)
        assert g[moved_against] != 0.0 and g[1] != 0.0 and g[3] != 0.0, (sign, g)
        # unclipped entries: d(−ρ Â w)/d logp = −ρ Â w
        ratio = shift.exp()[0]
        for i in (1, 3, moved_against):
            assert float(g[i]) == pytest.approx(-float(ratio[i]) * sign / 4, rel=1e-12)
    assert eps == agent.config.clip_coef if agent_cls is PPO else eps == agent.config.epsilon


def test_grpo_group_advantages_match_the_formula_on_a_hand_made_batch():
    r = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, 5.0, -1.0]], dtype=torch.float64)
    # sampled groups: Â = (r − mean) / (unbiased std + 1e-4)
    agent = GRPO(scale_rewards="group")
    adv = agent.advantages(_rollout(r))
    expected = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=True, keepdim=True) + 1e-4)
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=0)
    # exact expectation: π-weighted mean and π-weighted (population) std
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64)
    adv = agent.advantages(_rollout(r, w, exact=True))
    mean = (w * r).sum(1, keepdim=True)
    std = (w * (r - mean) ** 2).sum(1, keepdim=True).sqrt()
    torch.testing.assert_close(adv, (r - mean) / (std + 1e-4), rtol=1e-12, atol=0)
    # batch scaling: one std over the whole batch
    adv = GRPO(scale_rewards="batch").advantages(_rollout(r))
    torch.testing.assert_close(adv, (r - r.mean(1, keepdim=True)) / (r.std(unbiased=True) + 1e-4), rtol=1e-12, atol=0)
