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


def test_reinforce_and_rloo_gradients_match_their_estimators_on_a_hand_made_batch():
    """Sampled rollout, k = 4 samples in each of C = 2 contexts: ∂loss/∂log π(a_i) = −(R_i − b_i)/(C·k) with
    REINFORCE's b = the batch mean of R and RLOO's b_i = the mean of the other k − 1 samples of the context."""
    from baselines.reinforce import REINFORCE
    from baselines.rloo import RLOO

    R = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, 5.0, -1.0]], dtype=torch.float64)
    C, k = R.shape
    ro = _rollout(R)
    rloo_b = torch.tensor([[sum(R[c, j] for j in range(k) if j != i) / (k - 1) for i in range(k)] for c in range(C)],
                          dtype=torch.float64)
    for agent, b in ((REINFORCE(), R.mean()), (RLOO(), rloo_b)):
        agent.beta_ = 0.0
        logp = ro.old_logp.clone().requires_grad_(True)
        loss, _ = agent.loss(logp, ro)
        (grad,) = torch.autograd.grad(loss, logp)
        torch.testing.assert_close(grad, -(R - b) / (C * k), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("agent_cls", [PPO, GRPO])
def test_clipped_surrogate_value_matches_eq_7_on_a_grid_of_ratios(agent_cls):
    """−E[min(ρÂ, clip(ρ, 1−ε, 1+ε)Â)] = −E[Â·min(ρ, 1+ε)] for Â > 0 and −E[Â·max(ρ, 1−ε)] for Â < 0."""
    agent = agent_cls()
    agent.beta_ = 0.0
    eps = 0.2
    ratios = [0.5, 0.75, 0.85, 1.0, 1.1, 1.25, 1.35, 1.5]
    ro = _rollout(torch.zeros(1, len(ratios), dtype=torch.float64))
    logp = ro.old_logp + torch.tensor([ratios], dtype=torch.float64).log()
    for a in (2.0, -3.0):
        adv = torch.full((1, len(ratios)), a, dtype=torch.float64)
        loss, _ = agent.loss(logp, ro, adv)
        expected = -sum(a * (min(r, 1 + eps) if a > 0 else max(r, 1 - eps)) for r in ratios) / len(ratios)
        assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_ppo_advantages_are_the_whitened_reward_minus_the_batch_mean():
    """One-step GAE with V = the batch mean of R, whitened to std 1 over the batch (π-weighted when exact)."""
    r = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, 5.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(PPO(whiten_advantages=False).advantages(_rollout(r)), r - r.mean(), rtol=1e-12, atol=0)
    adv = PPO().advantages(_rollout(r))
    torch.testing.assert_close(adv, (r - r.mean()) / ((r - r.mean()).pow(2).mean().sqrt() + 1e-8), rtol=1e-12, atol=0)
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64)
    V = (w * r).sum(1).mean()
    std = (w * (r - V) ** 2).sum(1).mean().sqrt()
    torch.testing.assert_close(PPO().advantages(_rollout(r, w, exact=True)), (r - V) / (std + 1e-8), rtol=1e-12, atol=0)


def test_dpo_family_losses_have_their_papers_minimizers():
    """For a pair whose first candidate is preferred with probability P, the expected loss
    P·L(h) + (1 − P)·L(−h) is stationary at: sigmoid (ε = 0) βh = logit P; cDPO βh = logit((1−ε)P + ε(1−P));
    IPO h = (2P − 1)/(2β). rDPO is unbiased under flips at rate ε: (1−ε)L(h) + εL(−h) = −log σ(βh).
    SLiC's hinge is max(0, 1 − βh)."""
    from baselines.dpo import dpo_loss

    beta, eps = 0.5, 0.2
    for P in (0.6, 0.9):
        targets = {("sigmoid", 0.0): math.log(P / (1 - P)) / beta,
                   ("sigmoid", eps): math.log(((1 - eps) * P + eps * (1 - P)) / (eps * P + (1 - eps) * (1 - P))) / beta,
                   ("ipo", 0.0): (2 * P - 1) / (2 * beta)}
        for (loss_type, ls), h_star in targets.items():
            h = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
            expected_loss = P * dpo_loss(h, loss_type, beta, ls) + (1 - P) * dpo_loss(-h, loss_type, beta, ls)
            (g,) = torch.autograd.grad(expected_loss.sum(), h)
            assert abs(float(g)) < 1e-12, (loss_type, ls, P)
    h = torch.linspace(-3, 3, 13, dtype=torch.float64)
    robust = (1 - eps) * dpo_loss(h, "robust", beta, eps) + eps * dpo_loss(-h, "robust", beta, eps)
    torch.testing.assert_close(robust, -torch.nn.functional.logsigmoid(beta * h), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dpo_loss(h, "hinge", beta), (1 - beta * h).clamp_min(0), rtol=0, atol=0)
