"""Token-level baselines (issue 20): exact expected gradients on a tiny world (V=3, L=2), step 0 is π_ref,
training raises the proxy, determinism, SB3 PPO on tiltenv/Tokens-v0."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import tiltenv  # noqa: F401  (registers tiltenv/Tokens-v0)
from baselines.token_pg import TokenPG, TokenPGConfig, token_pg_loss
from tiltenv import make_world
from tiltenv.worlds.tokens import TokenConfig, all_responses, sample_responses, token_logp, tree_logp
from tiltenv.worlds.world import torch_generator

TINY = dict(V=3, L=2, prompt_len=2, n_labels=200, n_eval_contexts=4, n_norm_contexts=8, ref_hidden=8)
BETA = 0.3


@pytest.fixture(scope="module")
def tiny():
    return make_world(TokenConfig(**TINY))


SMALL = dict(V=4, L=3, n_labels=300, n_eval_contexts=16, n_norm_contexts=16)


@pytest.fixture(scope="module")
def small():
    return make_world(TokenConfig(**SMALL))


def _setup(world):
    task = world.task
    policy = task.make_policy().double()
    with torch.no_grad():  # move away from π_ref, so the KL terms have a gradient
        policy.head.weight.add_(torch.randn(policy.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    ref = task.ref_model.double()
    prompts = world.judge.eval_prompts[:3]
    return task, policy, ref, prompts


def _grad(loss, model):
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, model.parameters())])


def _batch(task, policy, ref, prompts, ys_per_prompt):
    B, k = prompts.shape[0], ys_per_prompt.shape[0] // prompts.shape[0]
    rep = prompts.repeat_interleave(k, 0)
    proxy = task.reward(rep, ys_per_prompt, count=False).to(torch.float64).reshape(B, k)
    tok = token_logp(policy, rep, ys_per_prompt).reshape(B, k, 2)
    ref_tok = token_logp(ref, rep, ys_per_prompt).reshape(B, k, 2).detach()
    return tok, ref_tok, proxy


def _exact_objective_grad(task, policy, ref, prompts):
    """∇ of J(π) = mean_c Σ_y π(y|c) (r̂(c, y) − β (log π − log π_ref)) by autograd over all 9 responses."""
    ys = all_responses(3, 2).repeat(prompts.shape[0], 1)
    tok, ref_tok, proxy = _batch(task, policy, ref, prompts, ys)
    lp, lref = tok.sum(-1), ref_tok.sum(-1)
    J = (lp.exp() * (proxy - BETA * (lp - lref))).sum(-1).mean()
    return _grad(J, policy)


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo"])
def test_exact_expectation_gradient_is_the_gradient_of_J(tiny, algorithm):
    task, policy, ref, prompts = _setup(tiny)
    ys = all_responses(3, 2).repeat(prompts.shape[0], 1)
    tok, ref_tok, proxy = _batch(task, policy, ref, prompts, ys)
    cfg = TokenPGConfig(algorithm=algorithm, exact_expectation=True)
    loss = token_pg_loss(cfg, BETA, tok, tok.detach(), ref_tok, proxy, tok.sum(-1).exp().detach())
    g_exact = _exact_objective_grad(task, policy, ref, prompts)
    assert g_exact.norm() > 0.1
    assert torch.allclose(-_grad(loss, policy), g_exact, atol=1e-10, rtol=0)


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo"])
def test_sampled_token_gradient_is_unbiased_for_the_exact_one(tiny, algorithm):
    task, policy, ref, prompts = _setup(tiny)
    k = 20_000
    rep = prompts.repeat_interleave(k, 0)
    ys, _ = sample_responses(policy, rep, 2, torch_generator(3))
    tok, ref_tok, proxy = _batch(task, policy, ref, prompts, ys)
    cfg = TokenPGConfig(algorithm=algorithm, num_generations=k)
    loss = token_pg_loss(cfg, BETA, tok, tok.detach(), ref_tok, proxy, torch.full(proxy.shape, 1.0 / k, dtype=torch.float64))
    g_exact = _exact_objective_grad(task, policy, ref, prompts)
    g = -_grad(loss, policy)
    assert (g - g_exact).norm() / g_exact.norm() < 0.05
    assert torch.nn.functional.cosine_similarity(g, g_exact, 0) > 0.998


def test_grpo_k3_in_the_loss_is_the_per_prefix_forward_kl(tiny):
    """On-policy, zero advantages: GRPO's per-token k3 term has the gradient of β/L Σ_t E_{y_<t∼π} KL(π_ref‖π)."""
    task, policy, ref, prompts = _setup(tiny)
    ys = all_responses(3, 2).repeat(prompts.shape[0], 1)
    tok, ref_tok, _ = _batch(task, policy, ref, prompts, ys)
    cfg = TokenPGConfig(algorithm="grpo", exact_expectation=True, scale_rewards="none")
    zero = torch.zeros(tok.shape[:2], dtype=torch.float64)
    loss = token_pg_loss(cfg, BETA, tok, tok.detach(), ref_tok, zero, tok.sum(-1).exp().detach())

    def cond(model, state):
        return torch.log_softmax(model.next_logits(state).to(torch.float64), -1)

    s0, r0 = policy.initial_state(prompts), ref.initial_state(prompts)
    lp0, lr0 = cond(policy, s0), cond(ref, r0)
    kl0 = (lr0.exp() * (lr0 - lp0)).sum(-1)
    v = torch.arange(3).repeat(prompts.shape[0])
    lp1 = cond(policy, policy.advance(s0.repeat_interleave(3, 0), v)).reshape(-1, 3, 3)
    lr1 = cond(ref, ref.advance(r0.repeat_interleave(3, 0), v)).reshape(-1, 3, 3)
    kl1 = (lr1.exp() * (lr1 - lp1)).sum(-1)  # (B, first token)
    target = BETA / 2 * (kl0 + (lp0.exp().detach() * kl1).sum(-1)).mean()
    assert torch.allclose(_grad(loss, policy), _grad(target, policy), atol=1e-10, rtol=0)


def test_step_zero_is_ref_exactly_and_training_raises_the_proxy(small):
    world = small
    snaps = {}
    agent = TokenPG(algorithm="rloo", learning_rate=0.03, batch_size=16).fit(
        world.task, proxy_queries=1536, checkpoint=lambda step, pol: snaps.__setitem__(step, pol))
    j = world.judge
    assert torch.equal(j.policy_logp(snaps[0]), j.eval_ref_logp)  # bit-identical: the policy starts at π_ref
    assert max(snaps) == 1536 and len(snaps) >= 4
    before, after = j.evaluate(snaps[0]), j.evaluate(agent.model)
    assert after["proxy_value"] > before["proxy_value"] + 0.3 and after["kl"] > 0.05
    again = TokenPG(algorithm="rloo", learning_rate=0.03, batch_size=16).fit(world.task, proxy_queries=1536)
    assert all(torch.equal(a, b) for a, b in zip(agent.model.parameters(), again.model.parameters()))


def test_grpo_and_reinforce_train(small):
    world = small
    base = world.judge.evaluate(world.task.ref_model)["proxy_value"]
    for alg in ("grpo", "reinforce"):
        agent = TokenPG(algorithm=alg, learning_rate=0.03, batch_size=16).fit(world.task, proxy_queries=1024)
        assert world.judge.evaluate(agent.model)["proxy_value"] > base + 0.2, alg


def test_config_errors():
    with pytest.raises(ValueError, match=r"algorithm must be one of \['reinforce', 'rloo', 'grpo', 'ppo'\].*Did you mean 'rloo'"):
        TokenPGConfig(algorithm="rlo")
    with pytest.raises(ValueError, match=r"num_generations must be in \[2, inf\)"):
        TokenPGConfig(algorithm="grpo", num_generations=1)
    with pytest.raises(TypeError, match="Did you mean 'learning_rate'"):
        TokenPGConfig(learning_rat=0.1)


def test_sb3_ppo_raises_the_proxy_on_the_token_env(small):
    from stable_baselines3 import PPO

    from baselines.token_sb3 import SB3TokenPolicy

    world = small
    env = gym.make("tiltenv/Tokens-v0", **SMALL)
    model = PPO("MultiInputPolicy", env, n_steps=384, batch_size=96, n_epochs=4, learning_rate=5e-3, seed=0, verbose=0,
                device="cpu")
    before = world.judge.evaluate(SB3TokenPolicy(model, world.task))
    model.learn(1152)  # 384 responses of 3 tokens; measured: exact proxy value 0.28 -> 1.59
    after = world.judge.evaluate(SB3TokenPolicy(model, world.task))
    assert after["proxy_value"] > before["proxy_value"] + 0.5, (before["proxy_value"], after["proxy_value"])
    # the SB3 adapter is a law over the V^L responses
    lp = world.judge.policy_logp(SB3TokenPolicy(model, world.task))
    assert float((lp.exp().sum(-1) - 1).abs().max()) < 1e-12


def test_token_dpo_starts_at_log2_and_raises_the_gold(small):
    from baselines.token_dpo import TokenDPO, TokenDPOConfig

    world, tp = small, small.task.token_preferences
    agent = TokenDPO(TokenDPOConfig(learning_rate=0.01, epochs=2, batch_size=64))
    ref = world.task.ref_model
    win = tp["label"].bool()[:, None]
    c, r = torch.where(win, tp["a"], tp["b"]), torch.where(win, tp["b"], tp["a"])
    lc, lr = world.task.ref_sequence_logp(tp["prompts"], c), world.task.ref_sequence_logp(tp["prompts"], r)
    assert abs(float(agent.loss(ref, lc, lr, tp["prompts"], c, r, 0.25)) - float(torch.log(torch.tensor(2.0)))) < 1e-6
    agent.fit(world.task)
    j = world.judge
    assert j.evaluate(agent.model)["gold_value"] > j.evaluate(ref)["gold_value"] + 0.1
    with pytest.raises(ValueError, match=r"loss_type must be one of \['sigmoid', 'ipo'\]"):
        TokenDPOConfig(loss_type="dpo")


def test_gae_is_the_discounted_sum_of_td_errors():
    from baselines.token_pg import gae

    g = torch.Generator().manual_seed(0)
    r, v = torch.randn((5, 4), generator=g, dtype=torch.float64), torch.randn((5, 4), generator=g, dtype=torch.float64)
    gamma, lam = 0.9, 0.8
    nxt = torch.cat([v[:, 1:], torch.zeros(5, 1, dtype=torch.float64)], 1)
    delta = r + gamma * nxt - v
    expect = torch.stack([sum((gamma * lam) ** (k - t) * delta[:, k] for k in range(t, 4)) for t in range(4)], 1)
    assert torch.allclose(gae(r, v, gamma, lam), expect, atol=1e-12)
    # λ = γ = 1 and a zero critic: the advantage of every token is the reward-to-go
    assert torch.allclose(gae(r, torch.zeros_like(v), 1.0, 1.0), r.flip(1).cumsum(1).flip(1), atol=1e-12)


def test_token_ppo_with_gae_trains(small):
    world = small
    base = world.judge.evaluate(world.task.ref_model)["proxy_value"]
    agent = TokenPG(algorithm="ppo", learning_rate=0.01, batch_size=16, num_iterations=2).fit(world.task, proxy_queries=1024)
    assert world.judge.evaluate(agent.model)["proxy_value"] > base + 0.3
    assert agent.critic is not None and agent.critic.value.weight.abs().sum() > 0  # the critic learned
