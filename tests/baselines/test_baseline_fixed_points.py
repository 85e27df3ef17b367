"""Fixed points with exact expected gradients on a 10-arm tabular bandit.

``exact_expectation=True`` scores all K arms and weights each by π(k) instead of sampling, so every loss is
its exact expectation and the agents run deterministic gradient descent on their population objective.
"""

from __future__ import annotations

import copy

import pytest
import torch
from baseline_helpers import Arms, tv

from baselines import DPO, GRPO, REINFORCE, RLOO, TrainBudget, chi2_tilt_logp, make_agent
from baselines.dpo import dpo_loss
from baselines.grpo import forward_kl_fixed_point
from baselines.pg import Rollout
from baselines.policy import Policy
from tiltenv import metrics as M
from tiltenv.rewards.labels import make_preferences

STEPS = 1000  # exact gradient steps (one context per step)


def exact_fit(name: str, arms: Arms, steps: int = STEPS, **kw):
    agent = make_agent(name, exact_expectation=True, batch_size=1, device="cpu", **kw)
    return agent.fit(arms.task, TrainBudget(proxy_queries=arms.K * steps))


def tilt(arms: Arms) -> torch.Tensor:
    return M.tilt_logp(arms.ref.log(), arms.r, arms.beta).exp()


@pytest.mark.parametrize(
    "kw",
    [
        dict(kl_penalty="reward", kl_estimator="k1"),  # KL in the reward (the RLHF reward)
        dict(kl_penalty="loss", kl_estimator="analytic"),  # the analytic-KL gradient
        dict(kl_penalty="loss", kl_estimator="k2"),  # k2's on-policy gradient is the reverse-KL gradient
    ],
    ids=["k1-in-reward", "analytic-KL-in-loss", "k2-in-loss"],
)
def test_reinforce_converges_to_the_tilt(arms, kw):
    agent = exact_fit("reinforce", arms, **kw)
    assert tv(arms.probs(agent), tilt(arms)) < 1e-3


def test_rloo_with_kl_in_reward_converges_to_the_tilt(arms):
    assert tv(arms.probs(exact_fit("rloo", arms)), tilt(arms)) < 1e-3


def test_grpo_k3_in_loss_converges_to_the_forward_kl_fixed_point_not_the_tilt(arms):
    agent = exact_fit("grpo", arms, kl_penalty="loss", kl_estimator="k3", scale_rewards="none")
    p = arms.probs(agent)
    fixed = forward_kl_fixed_point(arms.ref, arms.r, arms.beta)
    assert tv(p, fixed) < 1e-3
    assert tv(fixed, tilt(arms)) > 0.1  # the two fixed points are far apart on this bandit
    assert tv(p, tilt(arms)) > 0.1


def test_forward_kl_fixed_point_is_stationary(arms):
    """π = β π_ref/(λ − r) ⇔ r + β π_ref/π is the same constant λ on every arm, and Σ π = 1."""
    pi = forward_kl_fixed_point(arms.ref, arms.r, arms.beta)
    lam = arms.r + arms.beta * arms.ref / pi
    assert float(pi.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(lam.max() - lam.min()) < 1e-9
    assert float(lam.min()) > float(arms.r.max())


def test_k1_in_the_loss_has_zero_expected_gradient(arms):
    """On-policy, E_π[∇ log π] = 0: k1 in the loss does not regularize at all (Schulman's estimators)."""
    for estimator, zero in [("k1", True), ("k2", False), ("k3", False)]:
        agent = REINFORCE(kl_penalty="loss", kl_estimator=estimator, exact_expectation=True, batch_size=1, device="cpu")
        agent.fit(arms.task, TrainBudget(proxy_queries=arms.K * 3))  # a few steps away from π_ref
        ro: Rollout = agent.collect(arms.task)
        logp = agent.net(ro.candidates, ro.ref_logp)
        (grad,) = torch.autograd.grad(agent.divergence_loss(logp, ro), agent.net.net[-1].weight)
        assert (float(grad.abs().max()) < 1e-7) == zero, estimator


@pytest.mark.parametrize("where", ["loss", "reward"])
def test_chi2_regularized_pg_converges_to_the_chi2_closed_form(where):
    arms = Arms(beta=2.0)  # large β: every arm keeps positive mass (a softmax policy cannot reach exact zeros)
    target = chi2_tilt_logp(arms.ref.log(), arms.r, arms.beta).exp()
    assert bool((target > 0).all())
    agent = exact_fit("reinforce", arms, divergence="chi2", kl_penalty=where,
                      kl_estimator="analytic" if where == "loss" else "k1")
    assert tv(arms.probs(agent), target) < 1e-3


def test_chi2_closed_form_matches_bisection_and_is_sparse_for_small_beta():
    g = torch.Generator().manual_seed(3)
    ref = torch.softmax(torch.randn(5, 12, generator=g, dtype=torch.float64), -1)
    ref[0, 3] = 0.0  # an arm π_ref never plays
    ref = ref / ref.sum(-1, keepdim=True)
    r = torch.randn(5, 12, generator=g, dtype=torch.float64)
    for beta in (0.05, 0.5, 5.0):
        pi = chi2_tilt_logp(ref.log(), r, beta).exp()
        lo, hi = r.min(-1, keepdim=True).values - 4 * beta - 1, r.max(-1, keepdim=True).values
        for _ in range(200):  # Σ π_ref (r − λ)_+ = 2β by bisection
            mid = (lo + hi) / 2
            big = (ref * (r - mid).clamp_min(0)).sum(-1, keepdim=True) > 2 * beta
            lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
        expected = ref * (r - hi).clamp_min(0) / (2 * beta)
        assert torch.allclose(pi, expected, atol=1e-10)
        assert float(pi[0, 3]) == 0.0
    assert int((chi2_tilt_logp(ref.log(), r, 0.05).exp() == 0).sum()) > 5  # small β: truncated support


def _bt_preferences(arms: Arms, n: int, tau: float, seed: int = 1):
    cand = torch.eye(arms.K).expand(n, arms.K, arms.K).clone()
    ref_logp = arms.ref.log().to(torch.float32).expand(n, arms.K).clone()
    return make_preferences(cand, ref_logp, lambda x: x.to(torch.float64) @ arms.r, temperature=tau, flip_rate=0.0,
                            generator=torch.Generator().manual_seed(seed))


def test_dpo_population_loss_is_minimized_by_the_tilt_of_the_bt_reward(arms):
    """Exact expected DPO loss over all ordered pairs (a, b) ~ π_ref², chosen with P = σ((r_a − r_b)/τ)."""
    tau = 0.7
    pi = Policy(arms.K, device="cpu")
    opt = torch.optim.Adam(pi.parameters(), lr=0.05)
    x = torch.eye(arms.K)
    P = torch.sigmoid((arms.r[:, None] - arms.r[None, :]) / tau)
    W = (arms.ref[:, None] * arms.ref[None, :] * P).to(torch.float32)  # weight of (chosen=a, rejected=b)
    for _ in range(STEPS):
        f = pi.score(x)
        loss = (W * dpo_loss(f[:, None] - f[None, :], "sigmoid", arms.beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = pi(x[None], arms.ref.log().to(torch.float32)[None])[0].exp()
    assert tv(p, M.tilt_logp(arms.ref.log(), arms.r / tau, arms.beta).exp()) < 1e-3


def test_dpo_on_abundant_bt_preferences_converges_to_the_bt_tilt(arms):
    tau = 0.7
    task = copy.copy(arms.task)
    task.preferences = _bt_preferences(arms, 20_000, tau)
    agent = DPO(batch_size=20_000, num_train_epochs=400, learning_rate=0.05, device="cpu").fit(task)
    target = M.tilt_logp(arms.ref.log(), arms.r / tau, arms.beta).exp()
    assert tv(arms.probs(agent), target) < 0.02  # sampling error of 20k pairs (measured ≈ 0.008)
    assert tv(M.tilt_logp(arms.ref.log(), arms.r, arms.beta).exp(), target) > 0.1  # τ matters: not the r-tilt


def test_ipo_stays_finite_on_deterministic_preferences_where_dpo_diverges(arms):
    task = copy.copy(arms.task)
    task.preferences = _bt_preferences(arms, 5_000, tau=0.0)
    scale = {}
    for loss_type in ("ipo", "sigmoid"):
        for epochs in (150, 1500):
            agent = DPO(loss_type=loss_type, batch_size=5_000, num_train_epochs=epochs, learning_rate=0.05,
                        device="cpu").fit(task)
            f = agent.net.score(torch.eye(arms.K)).detach()
            assert bool(torch.isfinite(f).all())
            scale[loss_type, epochs] = float(f.max() - f.min())
    # IPO: converged and bounded (its target margin is 1/(2β) = 1); DPO's margins keep growing
    assert scale["ipo", 1500] == pytest.approx(scale["ipo", 150], rel=0.02)
    assert scale["ipo", 1500] < 2 / arms.beta
    assert scale["sigmoid", 1500] > 2 * scale["sigmoid", 150]
    probs = arms.probs(agent)
    assert bool(torch.isfinite(probs).all())


def test_grpo_group_scaling_moves_the_fixed_point(arms):
    """scale_rewards='group' divides by std_π(r): not the same fixed point as 'none' (documented)."""
    a = exact_fit("grpo", arms, steps=600, scale_rewards="none")
    b = exact_fit("grpo", arms, steps=600, scale_rewards="group")
    assert tv(arms.probs(a), arms.probs(b)) > 0.01


def test_exact_expectation_spends_k_queries_per_context(arms):
    agent = RLOO(exact_expectation=True, batch_size=3, device="cpu")
    q0 = arms.task.budget.proxy_queries
    agent.fit(arms.task, TrainBudget(proxy_queries=arms.K * 3 * 5))
    assert arms.task.budget.proxy_queries - q0 == arms.K * 3 * 5
    assert isinstance(GRPO(exact_expectation=True).config.num_generations, int)


@pytest.mark.parametrize("name", ["reinforce", "rloo", "grpo", "ppo"])
def test_exact_expectation_with_an_arm_pi_ref_never_plays(name):
    """π_ref = 0 on one arm: log π = -inf there; gradients stay finite and the arm keeps probability 0."""
    from tiltenv import TabularConfig, make_world

    ref = [0.0, 0.25, 0.25, 0.25, 0.25]
    task = make_world(TabularConfig(gold=[5.0, 0.0, 0.3, 0.6, 1.0], proxy=[5.0, 0.0, 0.3, 0.6, 1.0], ref_probs=ref)).task
    for kw in (dict(kl_penalty="reward"), dict(kl_penalty="loss", kl_estimator="k3")):
        extra = {"num_minibatches": 1} if name == "ppo" else {}
        agent = make_agent(name, exact_expectation=True, batch_size=2, device="cpu", **extra, **kw)
        agent.fit(task, TrainBudget(proxy_queries=5 * 2 * 50))
        p = agent.policy(*task.sample_contexts(1, seed=0))[0].exp()
        assert bool(torch.isfinite(agent.net.net[-1].weight).all())
        assert float(p[0]) == 0.0 and float(p[4]) > 0.25


# Several gradient steps per batch (ratios against π_old move away from 1, so the clip acts).
MANY_STEPS = {"grpo": dict(kl_penalty="loss", kl_estimator="k3", scale_rewards="none"),
              "ppo": dict(num_minibatches=1, whiten_advantages=False, max_grad_norm=None)}
ITERS = {"grpo": "num_iterations", "ppo": "num_epochs"}


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_many_steps_on_one_batch_stop_at_the_clipped_surrogates_maximum(arms, name):
    """The fixed point of μ steps on one batch maximizes E_old[min(ρÂ, clip(ρ, 1±ε)Â)]: its supremum
    Σ π_old Â (1 ± ε) is reached by pushing every arm just past the clip in its advantage's direction and
    no further (β = 0, plain SGD). Turning min into max makes the surrogate unbounded: the policy collapses
    on the best arm, and the other positive-advantage arms fall below 1 + ε."""
    agent = make_agent(name, exact_expectation=True, batch_size=1, device="cpu", optimizer="sgd", learning_rate=0.5,
                       beta=0.0, **{ITERS[name]: 500}, **MANY_STEPS[name])
    seen = []
    real_update = agent.update
    agent.update = lambda ro: seen.append(ro) or real_update(ro)
    agent.fit(arms.task, TrainBudget(proxy_queries=arms.K))  # one batch, 500 steps on it
    (ro,) = seen
    eps = 0.2
    with torch.no_grad():
        adv = agent.advantages(ro)
        ratio = (ro.at_actions(agent.net(ro.candidates, ro.ref_logp)) - ro.at_actions(ro.old_logp)).exp()
        surrogate = (ro.weights * torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)).sum()
        supremum = (ro.weights * torch.where(adv > 0, (1 + eps) * adv, (1 - eps) * adv)).sum()
    assert float(surrogate) == pytest.approx(float(supremum), rel=1e-3)  # approached from below (measured 1.5e-4)
    big = adv.abs() > 0.25  # arms with a small |Â| approach the clip slowly (gradient ∝ Â)
    assert bool((ratio[big & (adv > 0)] >= 1 + eps - 1e-2).all()) and bool((ratio[big & (adv < 0)] <= 1 - eps + 1e-2).all())
    assert float(ratio.max()) < 1.5  # and no further: the best arm is not pushed on


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_several_steps_per_batch_keep_the_fixed_point(arms, name):
    """μ = 4 steps per batch: GRPO (k3 in the loss) still reaches the forward-KL fixed point, PPO (KL in the
    reward) the tilt."""
    agent = exact_fit(name, arms, steps=300, **{ITERS[name]: 4}, **MANY_STEPS[name])
    target = forward_kl_fixed_point(arms.ref, arms.r, arms.beta) if name == "grpo" else tilt(arms)
    assert tv(arms.probs(agent), target) < 1e-3


def test_exact_par_reward_is_the_pi_ref_expectation_and_reinforce_reaches_its_tilt(arms):
    """Exact PAR (Fu et al. 2025): r̃_k = Σ_j π_ref,j σ(r_k − r_j), a fixed reward (the expectation under π_ref, not
    under the current π), so REINFORCE with the KL in the reward converges to π_ref e^{r̃/β}."""
    par = (arms.ref[None, :] * torch.sigmoid(arms.r[:, None] - arms.r[None, :])).sum(-1)
    agent = exact_fit("reinforce", arms, reward_shaping="par")
    assert tv(arms.probs(agent), M.tilt_logp(arms.ref.log(), par, arms.beta).exp()) < 1e-3


@pytest.mark.parametrize("divergence", ["kl", "chi2"])
def test_divergence_in_the_loss_keeps_its_fixed_point_with_several_contexts_per_batch(divergence):
    """batch_size = 4 identical contexts: the policy-gradient term and β·D are both averaged over contexts, so
    the fixed point is the same closed form as with one context (a sum in either term multiplies β by 4)."""
    arms = Arms(beta=2.0) if divergence == "chi2" else Arms()
    target = (chi2_tilt_logp(arms.ref.log(), arms.r, arms.beta) if divergence == "chi2" else
              M.tilt_logp(arms.ref.log(), arms.r, arms.beta)).exp()
    agent = make_agent("reinforce", exact_expectation=True, batch_size=4, device="cpu", divergence=divergence,
                       kl_penalty="loss", kl_estimator="analytic")
    agent.fit(arms.task, TrainBudget(proxy_queries=arms.K * 4 * STEPS))
    assert tv(arms.probs(agent), target) < 1e-3


def test_tilt_agents_satisfy_their_stationarity_conditions(arms):
    """KL: r_k − β log(π_k/π_ref,k) is one constant. χ² (KKT): r_k − 2β π_k/π_ref,k = λ on the support and
    r_k ≤ λ off it, Σ π = 1 — checked on the agents' outputs, not against the library's closed forms
    (tolerance: the task hands out π_ref in float32)."""
    from baselines import Tilt

    p = arms.probs(Tilt(device="cpu").fit(arms.task))  # β = the task's
    c = arms.r - arms.beta * (p / arms.ref).log()
    assert float(c.max() - c.min()) < 1e-6
    truncated = {}
    for beta in (0.2, 2.0):
        p = arms.probs(Tilt(beta=beta, divergence="chi2", device="cpu").fit(arms.task))
        on = p > 0
        lam = arms.r[on] - 2 * beta * p[on] / arms.ref[on]
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
        assert float(lam.max() - lam.min()) < 1e-5, beta
        assert bool((arms.r[~on] <= lam.mean() + 1e-5).all())
        truncated[beta] = int((~on).sum())
    assert truncated[0.2] > 0 and truncated[2.0] == 0  # both branches of the KKT conditions are exercised
