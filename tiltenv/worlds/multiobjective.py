"""Multi-objective gold: several hidden indices, per-dimension reward models, weighted aggregation.

A response can be helpful and harmful at once. A :class:`MultiObjectiveConfig` task has ``m`` hidden unit
directions ``θ*_1..θ*_m`` with **set pairwise cosines** (negative = a conflict), each with its own link and
scale, so dimension ``i``'s gold is ``r*_i(x) = a_i σ_i(<θ*_i, x>)``. The gold the task is scored on is the
aggregate ``r*(x) = w·r*(x)`` where the weights ``w`` are

* ``weight_mode="fixed"`` — one public vector;
* ``weight_mode="context"`` — one vector per **context type**: every context carries a categorical type drawn
  from ``type_probs``; the type is public and readable from any candidate (``task.context_type(x)``: the
  candidates' coordinate along a public direction ``e ⟂ θ*_i`` is the type's index, so it changes no gold);
* ``weight_mode="hidden"`` — one vector the agent does not know, revealed only through **trade-off
  preferences** (pairs labeled by the aggregate ``w·r*``, ``n_tradeoff_labels`` of them).

What a practitioner has (:class:`MultiObjectiveTask`, a :class:`~tiltenv.worlds.world.PublicTask`): per-dimension
preference data (``task.dim_preferences[i]``, labeled by a Bradley–Terry labeler of ``r*_i``), the mixed pairs
with the dimension that labeled each one hidden (``task.preferences``), the trade-off pairs, the context type,
and one reward model per dimension (``task.dim_proxies``, any proxy kind, each normalized under π_ref like
every proxy). The task's ``proxy`` — what the env rewards and ``task.proxy_reward`` scores — is, with
``aggregate="weighted"``, the weighted aggregate ``Σ_i w_i r̂_i`` (``w`` the public weights; with hidden
weights, the ones learned from the trade-off pairs by :func:`fit_tradeoff_weights`), and with
``aggregate="conflated"`` one reward model trained on the mixed pairs (normalized like any proxy).

The judge (:class:`MultiObjectiveJudge`) knows every θ*_i and the true weights; besides the usual metrics on
the aggregate gold it reports ``gold_value_dim{i}``, ``gold_gain_dim{i}`` (vs π_ref), ``value_gap_dim{i}``
(``J*_{β,i} − J_{β,i}``), ``min_dim_gain`` and ``dims_at_or_above_ref``; ``judge.dim_gold`` ``(m, C, K)`` feeds
the exact Pareto metrics of :mod:`tiltenv.metrics.pareto`.

On the leaderboard's test split (``gold_family=True``) each world draws, per dimension, its gold **member** from
the family of that dimension's link (:mod:`tiltenv.rewards.families`: the link's shape, the gold scale and the labeler's
τ and ε, from the ``family`` stream of the seed); the trade-off pairs use the first dimension's labeler. The
public config names the families and their centres, never a member; ``judge.extras["members"]`` holds them.

Example:
    >>> from tiltenv.worlds.multiobjective import MultiObjectiveConfig
    >>> from tiltenv import make_world
    >>> cfg = MultiObjectiveConfig(d=6, K=8, cosines=-0.5, n_labels=(300, 100), n_eval_contexts=64, n_norm_contexts=64)
    >>> world = make_world(cfg)
    >>> world.judge.dim_gold.shape, round(float(world.judge.theta_all[0] @ world.judge.theta_all[1]), 6)
    (torch.Size([2, 64, 8]), -0.5)
    >>> [len(p) for p in world.task.dim_preferences], len(world.task.preferences)
    ([300, 100], 400)
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tiltenv import metrics as M
from tiltenv._validation import ParameterTypeError, check_choice, check_float, check_int, check_footprint
from tiltenv.worlds.config import IndexConfigMethods, check_gold_family, frozen_proxy_kwargs
from tiltenv.rewards.labels import PreferenceData, make_preferences
from tiltenv.rewards.links import LINKS
from tiltenv.rewards.proxies import PROXIES, Proxy, ProxyContext, check_proxy, fit_linear_bt, parse_options
from tiltenv.rewards.proxy_cache import build_proxy
from tiltenv.worlds.world import (
    ContextSampler,
    Judge,
    PublicTask,
    World,
    _normalize_under_ref,
    register_world,
    torch_generator,
)

__all__ = [
    "MultiObjectiveConfig",
    "WEIGHT_MODES",
    "AGGREGATES",
    "MO_STREAMS",
    "mo_seed_streams",
    "direction_basis",
    "TypedContextSampler",
    "AggregateProxy",
    "MultiObjectiveTask",
    "MultiObjectiveJudge",
    "fit_tradeoff_weights",
    "conflated_proxy",
]

WEIGHT_MODES = ("fixed", "context", "hidden")
AGGREGATES = ("weighted", "conflated")

#: Independent random streams of a multi-objective task (append only).
MO_STREAMS = ("theta", "directions", "labels", "label_contexts", "proxy_init", "norm_contexts", "eval_contexts",
              "tradeoff_contexts", "tradeoff_labels", "mix", "family")


def mo_seed_streams(seed: int) -> dict[str, int]:
    """One 63-bit seed per named stream of :data:`MO_STREAMS` (``SeedSequence([seed, 13]).spawn``: disjoint from
    the single-index streams of the same seed)."""
    children = np.random.SeedSequence([int(seed), 13]).spawn(len(MO_STREAMS))
    return {n: int(c.generate_state(2, np.uint64)[0] >> np.uint64(1)) for n, c in zip(MO_STREAMS, children)}


def _sub_seeds(seed: int, n: int) -> list[int]:
    return [int(c.generate_state(2, np.uint64)[0] >> np.uint64(1)) for c in np.random.SeedSequence(seed).spawn(n)]


def _per_dim(name: str, value: Any, m: int, check) -> tuple:
    """A scalar broadcast to ``m`` dimensions, or a sequence of exactly ``m``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return tuple(check(name, value) for _ in range(m))
    vals = list(value)
    if len(vals) != m:
        raise ValueError(f"{name} must be one value or {m} values, one per objective (got {len(vals)}: {vals!r}).")
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(vals))


def _gram(cosines: tuple[float, ...], m: int) -> np.ndarray:
    G = np.eye(m)
    for (i, j), c in zip(((i, j) for i in range(m) for j in range(i + 1, m)), cosines):
        G[i, j] = G[j, i] = c
    return G


def _matrix(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterTypeError(f"{name} must be numbers (got {value!r}).") from None
    return arr


@dataclass(frozen=True)
class MultiObjectiveConfig(IndexConfigMethods):
    """A multi-objective single-index task (module docstring); every field is a ``gym.make`` kwarg."""

    d: int = field(default=16, metadata={"help": "Dimension of each candidate x ∈ R^d (≥ n_objectives + 1; +1 more "
                                                 "with weight_mode='context')."})
    K: int = field(default=16, metadata={"help": "Number of candidate responses per context."})
    n_objectives: int = field(default=2, metadata={"help": "m, the number of gold dimensions (hidden indices)."})
    cosines: Any = field(default=-0.5, metadata={
        "help": "Pairwise cosines <θ*_i, θ*_j> (one number for every pair, or m(m-1)/2 in the order (0,1), (0,2), …, "
                "(1,2), …); negative = a conflict. Their Gram matrix must be positive semi-definite."})
    links: Any = field(default="relu", metadata={"help": f"Link of each dimension (one name or m), from {sorted(LINKS)}."})
    gold_scales: Any = field(default=1.0, metadata={"help": "a_i of r*_i = a_i σ_i(<θ*_i, x>) (one number or m); > 0."})
    weight_mode: str = field(default="fixed", metadata={"help": f"How the aggregate gold weighs the dimensions: {WEIGHT_MODES}."})
    weights: Any = field(default=None, metadata={
        "help": "Aggregation weights: m non-negative numbers summing to 1 (fixed / hidden), or one such row per "
                "context type (context); None: uniform (fixed / hidden)."})
    type_probs: Any = field(default=None, metadata={
        "help": "weight_mode='context': the distribution of the context types (one probability per row of weights)."})
    n_tradeoff_labels: int = field(default=0, metadata={
        "help": "Trade-off preference pairs labeled by the aggregate w·r* (required > 0 with weight_mode='hidden')."})
    prompt_corr: float = field(default=0.0, metadata={"help": "ρ ∈ [0, 1): shared component of the candidates."})
    ref_eta: float = field(default=0.0, metadata={"help": "η of π_ref ∝ exp(η <u, x>); 0 is uniform."})
    ref_angle: float = field(default=60.0, metadata={"help": "Angle α (degrees) between u and θ*_1 (the first dimension)."})
    n_labels: Any = field(default=2000, metadata={"help": "Preference pairs per dimension (one number or m)."})
    label_temp: float = field(default=0.0, metadata={"help": "τ of every dimension's Bradley–Terry labeler; 0 = deterministic."})
    flip_rate: float = field(default=0.0, metadata={"help": "Symmetric label flip probability ε ∈ [0, 0.5)."})
    proxy: str = field(default="linear", metadata={"help": "Reward-model kind of every dimension (tiltenv.rewards.proxies.PROXIES)."})
    proxy_kwargs: Any = field(default=(), metadata={"help": "Keyword arguments of the proxy (a mapping)."})
    aggregate: str = field(default="weighted", metadata={
        "help": f"The task's proxy: {AGGREGATES[0]!r} (Σ w_i r̂_i of the per-dimension models) or {AGGREGATES[1]!r} "
                "(one model trained on the mixed pairs, the labeling dimension hidden)."})
    beta: float = field(default=0.25, metadata={"help": "KL coefficient β of the scored objective J_β; > 0."})
    n_eval_contexts: int = field(default=4096, metadata={"help": "Held-out contexts the judge scores on."})
    n_norm_contexts: int = field(default=4096, metadata={"help": "Contexts used to normalize the proxies under π_ref."})
    seed: int | None = field(default=0, metadata={"help": "Task seed; None in a public view (hidden)."})
    gold_family: bool = field(default=False, metadata={
        "help": "True (the leaderboard's test split): per dimension, the link's shape, the gold scale and the "
                "labeler's label_temp and flip_rate are drawn per world from the family of that dimension's link "
                "(tiltenv.rewards.families states the ranges; the fields are its centre), so the members are hidden with the "
                "seed. False: exactly these values."})

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("d", check_int("d", self.d, low=1, high=100_000))
        set_("K", check_int("K", self.K, low=2, high=1_000_000))
        m = check_int("n_objectives", self.n_objectives, low=1, high=64)
        set_("n_objectives", m)
        n_pairs = m * (m - 1) // 2
        cos = self.cosines
        if isinstance(cos, (Sequence, np.ndarray)) and not isinstance(cos, (str, bytes)):
            cos = list(cos)
            if len(cos) != n_pairs:
                raise ValueError(f"cosines must be one number or m(m-1)/2 = {n_pairs} numbers for n_objectives={m} "
                                 f"(got {len(cos)}: {cos!r}).")
        else:
            cos = [cos] * n_pairs
        cos = tuple(check_float(f"cosines[{i}]", c, low=-1.0, high=1.0) for i, c in enumerate(cos))
        set_("cosines", cos)
        eig = float(np.linalg.eigvalsh(_gram(cos, m)).min()) if m > 1 else 1.0
        if eig < -1e-9:
            raise ValueError(
                f"cosines {list(cos)} give a Gram matrix that is not positive semi-definite (smallest eigenvalue "
                f"{eig:.4g}): no {m} unit vectors have these pairwise cosines (for equal cosines c, c ≥ -1/(m-1) = "
                f"{-1 / max(m - 1, 1):.4g}).")
        set_("links", _per_dim("links", self.links, m, lambda n, v: check_choice(n, v, sorted(LINKS))))
        set_("gold_scales", _per_dim("gold_scales", self.gold_scales, m,
                                     lambda n, v: check_float(n, v, low=0.0, low_open=True)))
        check_choice("weight_mode", self.weight_mode, WEIGHT_MODES)
        extra_dims = 1 if self.weight_mode == "context" else 0
        if self.d < m + 1 + extra_dims:
            raise ValueError(f"d must be at least n_objectives + 1{' + 1 (the type direction)' if extra_dims else ''} "
                             f"= {m + 1 + extra_dims} (got d={self.d}).")
        self._check_weights(m)
        set_("n_tradeoff_labels", check_int("n_tradeoff_labels", self.n_tradeoff_labels, low=0))
        if self.weight_mode == "hidden" and self.n_tradeoff_labels == 0:
            raise ValueError("weight_mode='hidden' needs n_tradeoff_labels > 0: the weights are revealed only through "
                             "trade-off preferences.")
        set_("prompt_corr", check_float("prompt_corr", self.prompt_corr, low=0.0, high=1.0, high_open=True))
        set_("ref_eta", check_float("ref_eta", self.ref_eta))
        set_("ref_angle", check_float("ref_angle", self.ref_angle, low=0.0, high=180.0))
        set_("n_labels", _per_dim("n_labels", self.n_labels, m, lambda n, v: check_int(n, v, low=1)))
        set_("label_temp", check_float("label_temp", self.label_temp, low=0.0))
        set_("flip_rate", check_float("flip_rate", self.flip_rate, low=0.0, high=0.5, high_open=True))
        set_("proxy_kwargs", frozen_proxy_kwargs(self.proxy, self.proxy_kwargs))
        check_proxy(self.proxy, dict(self.proxy_kwargs))
        check_choice("aggregate", self.aggregate, AGGREGATES)
        if self.aggregate == "conflated" and not PROXIES[self.proxy].needs_labels:
            raise ValueError(f"aggregate='conflated' trains one reward model on the mixed preference pairs; proxy "
                             f"{self.proxy!r} learns from no labels (use a learned kind: linear, mlp, ensemble, two_stage).")
        set_("beta", check_float("beta", self.beta, low=0.0, low_open=True))
        set_("n_eval_contexts", check_int("n_eval_contexts", self.n_eval_contexts, low=1))
        set_("n_norm_contexts", check_int("n_norm_contexts", self.n_norm_contexts, low=2))
        n_ctx = sum(self.n_labels) + self.n_tradeoff_labels + self.n_norm_contexts + self.n_eval_contexts
        check_footprint("the task's contexts", 4 * self.K * self.d * n_ctx + 8 * self.K * (m + 3) * self.n_eval_contexts,
                        f"(Σ n_labels + n_tradeoff_labels + n_norm_contexts + n_eval_contexts = {n_ctx}) × K {self.K} "
                        f"× d {self.d} float32 + float64 judge arrays",
                        "lower n_labels, n_norm_contexts, n_eval_contexts, K or d", against_available=False)
        if self.seed is not None:
            set_("seed", check_int("seed", self.seed, low=0, high=2**63 - 1))
        check_gold_family(self, self.links)

    def _check_weights(self, m: int) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        w, tp = self.weights, self.type_probs
        if self.weight_mode == "context":
            if w is None or tp is None:
                raise ValueError("weight_mode='context' needs weights (one row of m weights per context type) and "
                                 "type_probs (the probability of each type).")
            probs = _matrix("type_probs", tp)
            if probs.ndim != 1 or probs.size < 2:
                raise ValueError(f"type_probs must be a sequence of at least 2 probabilities (got {tp!r}).")
            if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1) > 1e-6:
                raise ValueError(f"type_probs must be non-negative and sum to 1 (got {probs.tolist()}, sum {probs.sum():g}).")
            W = _matrix("weights", w)
            if W.ndim != 2 or W.shape != (probs.size, m):
                raise ValueError(f"weights must have one row of n_objectives={m} weights per context type: shape "
                                 f"({probs.size}, {m}) (got {W.shape}).")
            set_("type_probs", tuple(float(p) for p in probs))
        else:
            if tp is not None:
                raise ValueError(f"type_probs is only for weight_mode='context' (got weight_mode={self.weight_mode!r}).")
            if w is None:
                return  # uniform, or a hidden view
            W = _matrix("weights", w)
            if W.ndim != 1 or W.size != m:
                raise ValueError(f"weights must be n_objectives={m} numbers for weight_mode={self.weight_mode!r} "
                                 f"(got shape {W.shape}); one row per context type needs weight_mode='context'.")
            W = W[None, :]
        if not np.all(np.isfinite(W)) or np.any(W < 0) or np.any(np.abs(W.sum(-1) - 1) > 1e-6):
            raise ValueError(f"weights must be non-negative and each row must sum to 1 (got {W.tolist()}).")
        set_("weights", tuple(tuple(float(x) for x in row) for row in W) if self.weight_mode == "context"
             else tuple(float(x) for x in W[0]))

    # ------------------------------------------------------------------ helpers
    @property
    def n_types(self) -> int:
        return len(self.type_probs) if self.weight_mode == "context" else 1

    @property
    def weight_matrix(self) -> np.ndarray:
        """``(n_types, m)`` aggregation weights (the judge's; a hidden task's public view has none)."""
        if self.weights is None:
            if self.weight_mode == "hidden" and self.seed is None:
                raise ValueError("the weights of a weight_mode='hidden' task are not public (learn them from "
                                 "task.tradeoff_preferences; task.weights holds the library's estimate).")
            return np.full((1, self.n_objectives), 1.0 / self.n_objectives)
        return np.atleast_2d(np.asarray(self.weights, dtype=np.float64))

    def public(self) -> "MultiObjectiveConfig":
        """What an agent may know: no seed; with hidden weights, no weights.

        With ``gold_family`` every dimension's member (link shape, gold scale, labeler τ and ε) is drawn from the
        seed, so the public view names only the families (:meth:`families`) and their centres: every member has the
        same public view."""
        changes: dict[str, Any] = {"seed": None}
        if self.weight_mode == "hidden":
            changes["weights"] = None
        return dataclasses.replace(self, **changes)

    def families(self) -> tuple | None:
        """The :class:`tiltenv.rewards.families.GoldFamily` of each dimension's link (their ranges are public), or None for
        fixed members."""
        from tiltenv.rewards.families import family_of_link

        return tuple(family_of_link(link) for link in self.links) if self.gold_family else None

    def members(self) -> tuple:
        """Each dimension's gold member (:class:`tiltenv.rewards.families.Member`): the fields, or with ``gold_family`` the
        seed's draw of that dimension's family (the ``family`` stream, one sub-seed per dimension); needs the seed
        when ``gold_family``."""
        from tiltenv.rewards.families import draw_member, fixed_member

        if not self.gold_family:
            return tuple(fixed_member(link, a, self.label_temp, self.flip_rate)
                         for link, a in zip(self.links, self.gold_scales))
        if self.seed is None:
            raise ValueError("this public config hides its gold members (gold_family=True and no seed).")
        seeds = _sub_seeds(mo_seed_streams(self.seed)["family"], self.n_objectives)
        return tuple(draw_member(link, a, self.label_temp, self.flip_rate, seed=s)
                     for link, a, s in zip(self.links, self.gold_scales, seeds))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["proxy_kwargs"] = dict(self.proxy_kwargs)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = json.loads(json.dumps(v))
        if not self.gold_family:  # absent when False: dev configs keep their digests (cache and result keys)
            out.pop("gold_family")
        return out



# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------


def direction_basis(config: MultiObjectiveConfig) -> dict[str, np.ndarray]:
    """θ*_1..θ*_m (rows, exact pairwise cosines), θ⊥ (⟂ all θ*_i, for π_ref) and the type direction e (⟂ both).

    A random orthonormal frame ``Q`` (d × (m + 2)) from the task seed; ``θ*_i = Q[:, :m] b_i`` where the rows
    ``b_i`` factor the Gram matrix of the cosines (``B Bᵀ = G``, by its eigendecomposition).
    """
    seeds = mo_seed_streams(config.seed)
    m, d = config.n_objectives, config.d
    n_frame = min(d, m + 2)
    rng = np.random.default_rng(seeds["theta"])
    Q, _ = np.linalg.qr(rng.standard_normal((d, n_frame)))
    G = _gram(config.cosines, m)
    lam, V = np.linalg.eigh(G)
    B = V * np.sqrt(np.clip(lam, 0.0, None))  # rows b_i with <b_i, b_j> = G_ij
    theta = B @ Q[:, :m].T  # (m, d)
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    perp = Q[:, m] if n_frame > m else np.zeros(d)
    e = Q[:, m + 1] if n_frame > m + 1 else np.zeros(d)
    return {"theta": theta, "theta_perp": perp, "type_direction": e}


class TypedContextSampler(ContextSampler):
    """A :class:`~tiltenv.worlds.world.ContextSampler` whose contexts carry a categorical type (``weight_mode='context'``).

    Each context's type ``t ~ type_probs`` is written into every candidate as its coordinate along the public
    unit direction ``e`` (``<x, e> = t``); ``e`` is orthogonal to every θ*_i and to π_ref's direction, so the
    type changes neither gold nor π_ref. ``context_type(x)`` reads it back from any candidate.
    """

    def __init__(self, d, K, prompt_corr, ref_eta, ref_direction, type_direction: torch.Tensor, type_probs) -> None:
        super().__init__(d, K, prompt_corr, ref_eta, ref_direction)
        self.type_direction = type_direction.to(torch.float32)
        self.type_probs = torch.tensor(type_probs, dtype=torch.float64)

    def context_type(self, candidates: torch.Tensor) -> torch.Tensor:
        """(..., d) → (...) int64 type of each candidate's context."""
        e = self.type_direction.to(candidates.device, candidates.dtype if candidates.is_floating_point() else torch.float32)
        t = torch.round(candidates.to(e.dtype) @ e)
        return t.clamp(0, self.type_probs.numel() - 1).long()

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = super().sample(n, generator)
        t = torch.multinomial(self.type_probs.to(generator.device), n, replacement=True, generator=generator)
        e = self.type_direction.to(x.device)
        x = x - (x @ e).unsqueeze(-1) * e + t.to(x.dtype)[:, None, None] * e
        return x, self.ref_logp(x)


class _Untyped:
    """``context_type`` of a task without types: every candidate is type 0."""

    @staticmethod
    def context_type(candidates: torch.Tensor) -> torch.Tensor:
        return torch.zeros(candidates.shape[:-1], dtype=torch.long, device=candidates.device)


# --------------------------------------------------------------------------------------------------
# proxies
# --------------------------------------------------------------------------------------------------


class AggregateProxy(Proxy):
    """``r̂(x) = Σ_i w_{t(x), i} r̂_i(x)``: the per-dimension reward models weighted by the weights of each candidate's
    context type (one row when untyped). Not renormalized: its scale is that of ``w·r*``."""

    kind = "aggregate"

    def __init__(self, dim_proxies: Sequence[Proxy], weights: np.ndarray, sampler: Any) -> None:
        super().__init__()
        self.dims = torch.nn.ModuleList(list(dim_proxies))
        self.register_buffer("weights", torch.as_tensor(np.atleast_2d(weights), dtype=torch.float64).clone())
        self._typer = sampler if isinstance(sampler, TypedContextSampler) else _Untyped()

    def dim_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) → (..., m) the normalized per-dimension rewards."""
        return torch.stack([p(x).to(torch.float64) for p in self.dims], dim=-1)

    def weights_of(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) → (..., m) the weights of each candidate's context type."""
        return self.weights.to(x.device)[self._typer.context_type(x)]

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        r = (self.dim_rewards(x) * self.weights_of(x)).sum(-1)
        return r.to(x.dtype) if x.is_floating_point() else r


def fit_tradeoff_weights(prefs: PreferenceData, dim_proxies: Sequence[Proxy], *, l2: float = 1e-4) -> np.ndarray:
    """Weights learned from trade-off preferences: a Bradley–Terry model ``P(a ≻ b) = σ(<v, r̂(a) − r̂(b)>)`` on the
    per-dimension rewards (Newton, no intercept), ``v`` clipped at 0 and normalized to the simplex.

    Returns ``(m,)`` non-negative weights summing to 1 (uniform, with a warning, if no component is positive).
    """
    with torch.no_grad():
        ra = torch.stack([p(prefs.x_a).to(torch.float64) for p in dim_proxies], -1)
        rb = torch.stack([p(prefs.x_b).to(torch.float64) for p in dim_proxies], -1)
    v = fit_linear_bt(ra - rb, prefs.label, l2).clamp_min(0.0).numpy()
    if v.sum() <= 0:
        warnings.warn("the trade-off preferences gave no positive weight; using uniform weights.", stacklevel=2)
        return np.full(len(dim_proxies), 1.0 / len(dim_proxies))
    return v / v.sum()


def _mix(prefs: Sequence[PreferenceData], seed: int) -> PreferenceData:
    """The pairs of every dimension shuffled together (which dimension labeled a pair is not kept)."""
    cat = PreferenceData(*(torch.cat([getattr(p, f) for p in prefs]) for f in
                           ("x_a", "x_b", "label", "ref_logp_a", "ref_logp_b")))
    perm = torch.randperm(len(cat), generator=torch_generator(seed))
    return cat.subset(perm)


@dataclass(frozen=True)
class _ProxyKey:
    """What one dimension's (or the conflated) proxy depends on, for the on-disk cache key."""

    config: MultiObjectiveConfig
    dim: str
    n_labels: int
    label_kind: str = "pairwise"

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        for k in ("weights", "type_probs", "n_tradeoff_labels", "aggregate", "weight_mode"):
            cfg.pop(k, None)
        return {**cfg, "objective": self.dim, "family": "multiobjective"}


def conflated_proxy(world: World) -> Proxy:
    """One reward model of the task's kind trained on the mixed pairs (dimension hidden), normalized under π_ref —
    the conflated model, for a world built with ``aggregate='weighted'`` (whose ``task.proxy`` is the aggregate)."""
    task = world.task
    if not isinstance(task, MultiObjectiveTask):
        raise TypeError(f"conflated_proxy needs a multi-objective world (got a {type(task).__name__}).")
    return world.judge._conflated()


# --------------------------------------------------------------------------------------------------
# public task and judge
# --------------------------------------------------------------------------------------------------


class MultiObjectiveTask(PublicTask):
    """The public task of a multi-objective world (a :class:`~tiltenv.worlds.world.PublicTask`: every agent runs on it).

    Attributes (besides a PublicTask's):
        n_objectives: m.
        dim_proxies: the m normalized per-dimension reward models (frozen).
        dim_preferences: the m per-dimension :class:`~tiltenv.rewards.labels.PreferenceData`.
        preferences: every dimension's pairs shuffled together, the labeling dimension hidden.
        tradeoff_preferences: pairs labeled by the aggregate ``w·r*`` (``None`` without ``n_tradeoff_labels``).
        weights: ``(n_types, m)`` the aggregation weights the task's proxy uses: the true ones (fixed, context) or
            those learned from the trade-off pairs (hidden).
        weights_learned: whether ``weights`` were learned (hidden mode).
    """

    def __init__(self, config, sampler, proxy, preferences, dim_proxies, dim_preferences, tradeoff, weights,
                 weights_learned) -> None:
        super().__init__(config, sampler, proxy, preferences, None)
        self.dim_proxies = [p.requires_grad_(False).eval() for p in dim_proxies]
        self.dim_preferences = list(dim_preferences)
        self.tradeoff_preferences = tradeoff
        self.weights = np.array(weights, dtype=np.float64)
        self.weights_learned = bool(weights_learned)
        self._stack = AggregateProxy(self.dim_proxies, self.weights, sampler).requires_grad_(False).eval()

    n_objectives = property(lambda self: len(self.dim_proxies))
    n_types = property(lambda self: self.weights.shape[0])

    def context_type(self, candidates: Any) -> torch.Tensor:
        """(..., d) → (...) the context type of each candidate (0 everywhere without types)."""
        x = torch.as_tensor(candidates)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(x.shape)}).")
        return (self.sampler if isinstance(self.sampler, TypedContextSampler) else _Untyped).context_type(x)

    @torch.no_grad()
    def dim_proxy_rewards(self, candidates: Any, *, count: bool = True) -> torch.Tensor:
        """(..., d) → (..., m) every dimension's reward model on each candidate; counts one query per candidate
        (the candidate is scored once, by every dimension's model — as the aggregate proxy does)."""
        x = torch.as_tensor(candidates)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(x.shape)}).")
        if count:
            self.budget.proxy_queries += int(np.prod(x.shape[:-1]))
        return self._stack.to(x.device).dim_rewards(x)

    def weights_of(self, candidates: Any) -> torch.Tensor:
        """(..., d) → (..., m) the task's aggregation weights of each candidate's context type."""
        x = torch.as_tensor(candidates)
        return torch.as_tensor(self.weights, device=x.device)[self.context_type(x)]

    def __repr__(self) -> str:
        return (f"MultiObjectiveTask(K={self.K}, d={self.d}, m={self.n_objectives}, proxy={self.proxy.kind!r}, "
                f"weight_mode={self.config.weight_mode!r}, beta={self.beta})")


class MultiObjectiveJudge(Judge):
    """The judge of a multi-objective world: the aggregate gold is ``eval_gold``; ``dim_gold`` ``(m, C, K)`` holds
    every dimension's; ``eval_weights`` ``(C, m)`` the true weights of each evaluation context; ``theta_all`` the
    m hidden directions. :meth:`extra_metrics` adds the per-dimension metrics to every evaluation."""

    def __init__(self, config, gold, dim_golds, theta_all, eval_x, eval_ref, proxy, weight_matrix, typer, extras,
                 build_conflated) -> None:
        super().__init__(config, gold, theta_all[0], eval_x, eval_ref, proxy, extras=extras)
        self.theta_all = theta_all
        self.dim_gold_fns = dim_golds
        self.dim_gold = torch.stack([g(eval_x).to(torch.float64) for g in dim_golds])
        self.weight_matrix = np.asarray(weight_matrix, dtype=np.float64)
        self.eval_types = typer.context_type(eval_x[:, 0])
        self.eval_weights = torch.as_tensor(self.weight_matrix)[self.eval_types]
        self._build_conflated = build_conflated
        self._conflated_cache: Proxy | None = None

    def _conflated(self) -> Proxy:
        if self._conflated_cache is None:
            self._conflated_cache = self._build_conflated()
        return self._conflated_cache

    def extra_metrics(self, logp: torch.Tensor, beta: float) -> dict[str, float]:
        ref, g = self.eval_ref_logp, self.dim_gold
        out: dict[str, float] = {}
        gains = []
        for i in range(g.shape[0]):
            v, v0 = M.policy_value(logp, g[i]), M.policy_value(ref, g[i])
            out[f"gold_value_dim{i}"] = v
            out[f"gold_gain_dim{i}"] = v - v0
            out[f"value_gap_dim{i}"] = M.value_gap(logp, ref, g[i], beta)
            gains.append(v - v0)
        out["min_dim_gain"] = float(min(gains))
        out["dims_at_or_above_ref"] = float(min(gains) >= 0.0)
        return out


# --------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------


def _build(config: MultiObjectiveConfig) -> World:
    seeds = mo_seed_streams(config.seed)
    m, d, K = config.n_objectives, config.d, config.K
    basis = direction_basis(config)
    theta = torch.from_numpy(basis["theta"])  # (m, d)
    alpha = config.ref_angle_rad
    u = math.cos(alpha) * basis["theta"][0] + math.sin(alpha) * basis["theta_perp"]
    u_public = torch.from_numpy(u) if config.ref_eta != 0.0 else torch.zeros(d, dtype=torch.float64)
    if config.weight_mode == "context":
        sampler: ContextSampler = TypedContextSampler(d, K, config.prompt_corr, config.ref_eta, u_public,
                                                      torch.from_numpy(basis["type_direction"]), config.type_probs)
    else:
        sampler = ContextSampler(d, K, config.prompt_corr, config.ref_eta, u_public)
    typer = sampler if isinstance(sampler, TypedContextSampler) else _Untyped()
    members = config.members()  # the fields, or (gold_family) each dimension's draw of its link's family
    links = [mb.link for mb in members]
    scales = [mb.gold_scale for mb in members]

    def dim_gold(i: int):
        th, link, a = theta[i], links[i], scales[i]

        def gold(x: torch.Tensor) -> torch.Tensor:
            return a * link(x.to(torch.float64) @ th.to(x.device))

        return gold

    golds = [dim_gold(i) for i in range(m)]
    W = config.weight_matrix  # the true weights (the judge's)
    W_t = torch.from_numpy(W)

    def aggregate_gold(x: torch.Tensor) -> torch.Tensor:
        r = torch.stack([g(x) for g in golds], -1)
        return (r * W_t.to(x.device)[typer.context_type(x)]).sum(-1)

    spec = PROXIES[config.proxy]
    options = parse_options(config.proxy, config.proxy_options)
    label_seeds = _sub_seeds(seeds["labels"], m)
    ctx_seeds = _sub_seeds(seeds["label_contexts"], m)
    init_seeds = _sub_seeds(seeds["proxy_init"], m + 1)
    norm_x, norm_ref = sampler.sample(config.n_norm_contexts, torch_generator(seeds["norm_contexts"]))
    dim_prefs, dim_proxies = [], []
    for i in range(m):
        lx, lref = sampler.sample(config.n_labels[i], torch_generator(ctx_seeds[i]))
        prefs = make_preferences(lx, lref, golds[i], temperature=members[i].label_temp,
                                 flip_rate=members[i].flip_rate, generator=torch_generator(label_seeds[i]))
        del lx, lref
        dim_prefs.append(prefs)
        ctx = ProxyContext(d=d, theta=theta[i], gold=golds[i], link=links[i], gold_scale=scales[i],
                           preferences=prefs, pointwise=None, seed=init_seeds[i], device=torch.device("cpu"),
                           sample_ref=lambda n, g: sampler.sample(n, g))
        proxy = build_proxy(spec, options, ctx, _ProxyKey(config, f"dim{i}", config.n_labels[i]))
        _normalize_under_ref(proxy, norm_x, norm_ref)
        dim_proxies.append(proxy.requires_grad_(False).eval())
    mixed = _mix(dim_prefs, seeds["mix"])

    def build_conflated() -> Proxy:
        if not spec.needs_labels:
            raise ValueError(f"a conflated model needs a learned proxy kind (got {config.proxy!r}).")
        ctx = ProxyContext(d=d, theta=theta[0], gold=golds[0], link=links[0], gold_scale=scales[0],
                           preferences=mixed, pointwise=None, seed=init_seeds[m], device=torch.device("cpu"),
                           sample_ref=lambda n, g: sampler.sample(n, g))
        proxy = build_proxy(spec, options, ctx, _ProxyKey(config, "conflated", len(mixed)))
        _normalize_under_ref(proxy, norm_x, norm_ref)
        return proxy.requires_grad_(False).eval()

    tradeoff = None
    if config.n_tradeoff_labels > 0:
        tx, tref = sampler.sample(config.n_tradeoff_labels, torch_generator(seeds["tradeoff_contexts"]))
        # the trade-off labeler is the first dimension's (τ, ε): the config's own without gold_family
        tradeoff = make_preferences(tx, tref, aggregate_gold, temperature=members[0].label_temp,
                                    flip_rate=members[0].flip_rate, generator=torch_generator(seeds["tradeoff_labels"]))
        del tx, tref
    if config.weight_mode == "hidden":
        public_w, learned = fit_tradeoff_weights(tradeoff, dim_proxies)[None, :], True
    else:
        public_w, learned = W, False
    if config.aggregate == "conflated":
        task_proxy: Proxy = build_conflated()
        conflated_cache = task_proxy
    else:
        task_proxy = AggregateProxy(dim_proxies, public_w, sampler)
        conflated_cache = None
    eval_x, eval_ref = sampler.sample(config.n_eval_contexts, torch_generator(seeds["eval_contexts"]))
    task = MultiObjectiveTask(config, sampler, task_proxy, mixed, dim_proxies, dim_prefs, tradeoff, public_w, learned)
    judge = MultiObjectiveJudge(config, aggregate_gold, golds, theta, eval_x, eval_ref, task_proxy, W, typer,
                                {"theta_perp": torch.from_numpy(basis["theta_perp"]),
                                 "type_direction": torch.from_numpy(basis["type_direction"]),
                                 "members": members}, build_conflated)
    judge._conflated_cache = conflated_cache
    return World(task, judge)


def _check(config: MultiObjectiveConfig) -> None:
    n_ctx = sum(config.n_labels) + config.n_tradeoff_labels + config.n_norm_contexts + config.n_eval_contexts
    check_footprint("building this task", 4 * config.K * config.d * n_ctx, f"{n_ctx} contexts × K {config.K} × d "
                    f"{config.d} float32", "lower n_labels, n_norm_contexts, n_eval_contexts, K or d")


register_world(MultiObjectiveConfig, _build, _check, norm_stream=lambda c: mo_seed_streams(c.seed)["norm_contexts"])
