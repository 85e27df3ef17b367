"""Label ceiling: the strongest use of the labels we know — a reference entry of the board (issue 17).

It knows the task's gold **family** (public: :meth:`tiltenv.worlds.config.TaskConfig.family`, the ranges in
:mod:`tiltenv.rewards.families`), not the member. It fits, by maximum likelihood on the public labels,

* pairwise labels: θ (unit), the family's shape parameters (each kept inside its stated range), the labeler's
  inverse temperature κ = a/τ and its flip rate ε (inside its range) under

      P(a ≻ b) = ε + (1 − 2ε) · sigmoid(κ (σ_ψ(<θ, x_a>) − σ_ψ(<θ, x_b>)))      (Bradley–Terry with flips)

  and uses the family's centre gold scale (deterministic labels do not identify a);
* pointwise labels ``y = a σ_ψ(<θ, x>) + noise``: θ, ψ and a by least squares (Gaussian likelihood);

then tilts its estimate: ``π ∝ π_ref e^{â σ_ψ̂(<θ̂, x>)/β}`` (the closed form of ``baselines.tilt``). θ starts from
the direction of a least-squares fit of the proxy on a few contexts (its small proxy-query budget: at most
``probe_contexts`` × K candidates). With ``gold_family=False`` (the dev split) the link, scale and labeler are the
config's own, so only θ and κ are fitted: that is the "known-link MLE" and reaches ≈ 1.0 there, which is why the
dev split is not a ranking. A task without labels (tabular arms, multi-objective) falls back to the proxy's tilt.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines.label_ceiling import LabelCeiling
    >>> env = gym.make("tiltenv/Hump-v0", d=4, n_labels=300, n_eval_contexts=64, n_norm_contexts=64, gold_family=True)
    >>> agent = LabelCeiling(steps=50).fit(env.unwrapped.task)
    >>> agent.policy(*env.unwrapped.task.sample_contexts(2, seed=0)).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

import copy
import math
from dataclasses import field
from typing import Any

import torch

from baselines.base import Agent, Checkpointer, TrainBudget, as_tensor, check_device, config_dataclass, output_device, resolve_device
from tiltenv import metrics as M
from tiltenv._validation import check_float, check_int

__all__ = ["LabelCeilingConfig", "LabelCeiling"]


def _reference_policy(candidates: Any, ref_logp: Any) -> torch.Tensor:
    """pi_ref itself (the label ceiling's initial checkpoint, before its first proxy query)."""
    ref = as_tensor(ref_logp, "cpu", torch.float64)
    return torch.log_softmax(ref, dim=-1).to(output_device(candidates))


@config_dataclass
class LabelCeilingConfig:
    """Maximum-likelihood fit of θ and the gold family's parameters on the public labels, then the tilt."""

    steps: int = field(default=300, metadata={"help": "Adam steps of the maximum-likelihood fit."})
    learning_rate: float = field(default=0.05, metadata={"help": "Adam learning rate."})
    probe_contexts: int = field(default=16, metadata={"help": "Contexts whose K candidates the proxy scores to "
                                                              "initialize θ (the only proxy queries)."})
    seed: int = field(default=0, metadata={"help": "Seed of the probe contexts."})
    weight_temperature: float = field(default=0.5, metadata={"help": "Pointwise labels: θ starts from the mean of the "
                                                                     "x weighted by softmax(y / (this · std y))."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.steps = check_int("steps", self.steps, low=1)
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.probe_contexts = check_int("probe_contexts", self.probe_contexts, low=1)
        self.seed = check_int("seed", self.seed, low=0)
        self.weight_temperature = check_float("weight_temperature", self.weight_temperature, low=0.0, low_open=True)
        self.device = check_device(self.device)


def _squash(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.sigmoid(u)


class LabelCeiling(Agent):
    """Family-aware maximum-likelihood gold estimate, tilted; see the module docstring."""

    name = "label_ceiling"
    config_class = LabelCeilingConfig
    config: LabelCeilingConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "LabelCeiling":
        from tiltenv.worlds.config import TaskConfig

        self._check_task(task)
        budget = self._budget(budget)
        self.task = task
        self.device = resolve_device(self.config.device)
        self.beta_ = float(task.beta)
        cfg = task.config
        self.estimate_ = None  # None: fall back to the proxy's tilt
        data = task.preferences if task.preferences is not None else task.pointwise
        if not (isinstance(cfg, TaskConfig) and data is not None):
            self._checkpoint_once(checkpoint)  # no labels to fit: the proxy's tilt, no query in training
            return self
        # the scorer's schedule: the initial policy (pi_ref) before the first proxy query, the fitted tilt after
        ckpt = Checkpointer(checkpoint, [])
        ckpt.start(lambda: _reference_policy)
        queries_before = int(getattr(task.budget, "proxy_queries", 0) or 0)
        with torch.enable_grad():
            self.estimate_ = self._fit(task, cfg, budget)
        ckpt.finish(max(1, int(getattr(task.budget, "proxy_queries", 0) or 0) - queries_before), self.snapshot)
        self.checkpoint_steps = ckpt.steps
        return self

    # ------------------------------------------------------------------ the fit
    def _theta0(self, task: Any, budget: TrainBudget) -> torch.Tensor:
        """Least-squares direction of the proxy on a few contexts (the only proxy queries)."""
        n = max(1, min(self.config.probe_contexts, budget.proxy_queries // task.K))
        x, _ = task.sample_contexts(n, seed=self.config.seed)
        x = x.reshape(-1, task.d)
        r = task.proxy_reward(x).to(torch.float64)
        X = torch.cat([x.to(torch.float64), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        coef = torch.linalg.lstsq(X, (r - r.mean()).unsqueeze(1)).solution[:-1, 0]
        if not torch.isfinite(coef).all() or coef.norm() == 0:
            coef = torch.ones(task.d, dtype=torch.float64)
        return coef / coef.norm()

    def _fit(self, task: Any, cfg: Any, budget: TrainBudget) -> dict[str, Any]:
        from tiltenv.rewards.families import FLIP_RATE_SPREAD, GOLD_SCALE_RANGE, family_of_link, torch_member_link
        from tiltenv.rewards.links import get_link

        f64 = torch.float64
        if task.pointwise is not None:  # reward-weighted mean of the labeled x (stage 1 of the two-stage fit): it
            # sees the direction through a transform of the label, even where the link's first Hermite
            # coefficient is 0 (he3: information exponent 3, generative exponent 1); the proxy's linear fit would not
            y = task.pointwise.y.to(f64)
            w = torch.softmax(y / (self.config.weight_temperature * y.std()), 0)
            theta0 = (w.unsqueeze(1) * task.pointwise.x.to(f64)).sum(0)
            theta0 = theta0 / theta0.norm()
        else:
            theta0 = self._theta0(task, budget)
        theta = theta0.clone().requires_grad_(True)
        fam = cfg.family()
        params = {}
        if fam is not None:
            shape_u = {k: torch.zeros((), dtype=f64, requires_grad=True) for k in sorted(fam.ranges)}
            params.update(shape_u)
            lo_e, hi_e = max(0.0, cfg.flip_rate - FLIP_RATE_SPREAD), min(0.45, cfg.flip_rate + FLIP_RATE_SPREAD)
        log_kappa = torch.tensor(math.log(10.0), dtype=f64, requires_grad=True)
        eps_u = torch.zeros((), dtype=f64, requires_grad=True)
        log_a = torch.tensor(math.log(cfg.gold_scale), dtype=f64, requires_grad=True)
        log_noise = torch.zeros((), dtype=f64, requires_grad=True)

        def link_now() -> Any:
            if fam is None:
                return get_link(cfg.link)
            return torch_member_link(cfg.link, {k: _squash(shape_u[k], *fam.ranges[k]) for k in shape_u})

        def flip_now() -> torch.Tensor:
            if fam is None:
                return torch.tensor(cfg.flip_rate, dtype=f64)
            return _squash(eps_u, lo_e, hi_e)

        pairwise = task.preferences is not None
        if pairwise:
            xa, xb = task.preferences.x_a.to(f64), task.preferences.x_b.to(f64)
            y = task.preferences.label.to(f64)
            free = [theta, log_kappa, *params.values()] + ([eps_u] if fam is not None else [])
        else:
            x, y = task.pointwise.x.to(f64), task.pointwise.y.to(f64)
            free = [theta, log_a, log_noise, *params.values()]
        # two stages: θ (and κ / a) under the family's centre first, then every parameter from there (a fit of the
        # shape from a poor θ wanders off: the centre's fit is what a family-blind known-link fit would reach)
        centre = [theta, log_kappa] if pairwise else [theta, log_a, log_noise]
        opt = torch.optim.Adam(centre, lr=self.config.learning_rate)
        for step in range(self.config.steps):
            if step == self.config.steps // 2 and fam is not None:
                opt = torch.optim.Adam(free, lr=self.config.learning_rate)
            opt.zero_grad()
            link, u = link_now(), theta / theta.norm()
            if pairwise:
                p = torch.sigmoid(log_kappa.exp() * (link(xa @ u) - link(xb @ u)))
                e = flip_now()
                p = (e + (1 - 2 * e) * p).clamp(1e-12, 1 - 1e-12)
                loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
            else:
                resid = y - log_a.exp() * link(x @ u)
                loss = 0.5 * (resid / log_noise.exp()).pow(2).mean() + log_noise
            loss.backward()
            opt.step()
        with torch.no_grad():
            shape = {k: float(_squash(shape_u[k], *fam.ranges[k])) for k in shape_u} if fam is not None else {}
            if pairwise:  # deterministic labels do not identify the scale: the family's centre (the config's own)
                lo, hi = GOLD_SCALE_RANGE
                a = cfg.gold_scale * (math.sqrt(lo * hi) if fam is not None else 1.0)
            else:
                a = float(log_a.exp())
            return {"theta": (theta / theta.norm()).detach(), "shape": shape, "gold_scale": a,
                    "link": cfg.link, "family": fam is not None, "loss": float(loss)}

    # ------------------------------------------------------------------ the policy
    def _reward(self, cand: torch.Tensor) -> torch.Tensor:
        from tiltenv.rewards.families import member_link
        from tiltenv.rewards.links import get_link

        est = self.estimate_
        link = member_link(est["link"], est["shape"]) if est["family"] else get_link(est["link"])
        z = cand.to(torch.float64) @ est["theta"].to(cand.device)
        return est["gold_scale"] * link(z)

    @torch.no_grad()
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "task"):
            raise RuntimeError("LabelCeiling.policy() called before fit().")
        out_device = output_device(candidates)
        cand = as_tensor(candidates, self.device)
        ref = as_tensor(ref_logp, self.device, torch.float64)
        r = self._reward(cand) if self.estimate_ is not None else self.task.proxy_reward(cand, count=False)
        return M.tilt_logp(ref, r.to(torch.float64), self.beta_).to(out_device)

    def snapshot(self) -> "LabelCeiling":
        return copy.copy(self)
