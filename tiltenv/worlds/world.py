"""The world: hidden gold (the :class:`Judge`) and what an agent may see (the :class:`PublicTask`).

``make_world(config)`` draws θ* and every other random quantity from independent streams of one
``np.random.SeedSequence(config.seed)`` (``spawn``), simulates the labels, trains and normalizes the proxy,
and returns a :class:`World` with two parts:

* ``world.task`` — the **public task**: proxy scoring of any candidate batch (counted in ``task.budget``),
  the preference dataset, the reference policy, a context sampler. Agents get only this.
* ``world.judge`` — θ*, the gold reward and the held-out evaluation contexts. It scores policies.

Example:
    >>> from tiltenv import TaskConfig, make_world
    >>> world = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64))
    >>> cand, ref_logp = world.task.sample_contexts(3, seed=0)
    >>> tuple(cand.shape), tuple(world.task.proxy_reward(cand).shape)
    ((3, 8, 4), (3, 8))
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tiltenv._streams import STREAMS, seed_streams
from tiltenv._validation import check_footprint, check_int
from tiltenv.worlds.config import TabularConfig, TaskConfig
from tiltenv.rewards.feedback import compress_along, fit_ai_labeler, make_ai_preferences
from tiltenv.rewards.labels import PointwiseData, PreferenceData, make_pointwise, make_preferences
from tiltenv.rewards.links import get_link
from tiltenv.rewards.proxies import PROXIES, Proxy, ProxyContext, TableProxy, parse_options
from tiltenv.rewards.proxy_cache import build_proxy
from tiltenv.worlds.scoring import evaluate_on_judge

__all__ = [
    "STREAMS",
    "seed_streams",
    "ContextSampler",
    "FixedContextSampler",
    "Budget",
    "PublicTask",
    "Judge",
    "World",
    "make_world",
    "WORLD_BUILDERS",
    "register_world",
    "is_task_config",
]

def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class ContextSampler:
    """Samples contexts of K candidates and computes π_ref.

    ``x_k = sqrt(ρ) c + sqrt(1-ρ) ε_k`` with ``c, ε_k ~ N(0, I_d)``; ``log π_ref(k|x) = log_softmax(η <u, x_k>)``.
    The parameters (ρ, η, u) are public.
    """

    def __init__(self, d: int, K: int, prompt_corr: float, ref_eta: float, ref_direction: torch.Tensor) -> None:
        self.d, self.K = d, K
        self.prompt_corr = float(prompt_corr)
        self.ref_eta = float(ref_eta)
        self.ref_direction = ref_direction.to(torch.float32)
        self._u_cache: dict[torch.device, torch.Tensor] = {}

    def ref_logp(self, candidates: torch.Tensor) -> torch.Tensor:
        """(n, K, d) -> (n, K) log π_ref."""
        if self.ref_eta == 0.0:
            return torch.full(candidates.shape[:-1], -math.log(candidates.shape[-2]), dtype=candidates.dtype,
                              device=candidates.device)
        u = self._u_cache.get(candidates.device)
        if u is None:
            u = self._u_cache[candidates.device] = self.ref_direction.to(candidates.device)
        return torch.log_softmax(self.ref_eta * (candidates @ u.to(candidates.dtype)), dim=-1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` contexts on the generator's device: candidates (n, K, d) and ref_logp (n, K), float32."""
        device = generator.device
        x = torch.randn((n, self.K, self.d), generator=generator, device=device)
        if self.prompt_corr > 0:
            c = torch.randn((n, 1, self.d), generator=generator, device=device)
            x = math.sqrt(self.prompt_corr) * c + math.sqrt(1 - self.prompt_corr) * x
        return x, self.ref_logp(x)


class FixedContextSampler:
    """Tabular tasks: every context is the same K arms."""

    def __init__(self, features: torch.Tensor, ref_probs: torch.Tensor) -> None:
        self.features = features.to(torch.float32)
        self.K, self.d = self.features.shape
        self._ref_logp = torch.log(ref_probs.to(torch.float64)).to(torch.float32)
        self.prompt_corr, self.ref_eta = 0.0, 0.0
        self.ref_direction = torch.zeros(self.d)

    def ref_logp(self, candidates: torch.Tensor) -> torch.Tensor:
        """π_ref of each candidate's arm (nearest feature row), renormalized over the candidates given."""
        f = self.features.to(candidates.device, torch.float32)
        arm = ((candidates.to(torch.float32).unsqueeze(-2) - f) ** 2).sum(-1).argmin(-1)
        return torch.log_softmax(self._ref_logp.to(candidates.device)[arm], dim=-1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        device = generator.device
        x = self.features.to(device).expand(n, self.K, self.d).clone()
        return x, self._ref_logp.to(device).expand(n, self.K).clone()


@dataclass
class Budget:
    """Counters of what an agent consumed. ``proxy_queries`` counts candidates scored by the proxy."""

    proxy_queries: int = 0
    contexts_sampled: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def wall_time(self) -> float:
        return time.perf_counter() - self.started

    def reset(self) -> None:
        self.proxy_queries = 0
        self.contexts_sampled = 0
        self.started = time.perf_counter()


class PublicTask:
    """Everything an agent may use. No θ*, no gold, no evaluation contexts.

    Attributes:
        config: the task configuration's public view (``config.public()``: the seed, and a tabular task's
            gold, are ``None``).
        K, d, beta: candidates per context, dimension, KL coefficient of the scored objective.
        proxy: the normalized proxy reward model (a frozen ``torch.nn.Module``); prefer
            :meth:`proxy_reward`, which counts queries.
        preferences: :class:`~tiltenv.rewards.labels.PreferenceData` the proxy was trained on (``None`` if pointwise
            or tabular); pointwise: :class:`~tiltenv.rewards.labels.PointwiseData` or ``None``.
        sampler: the public context sampler / reference policy.
        budget: :class:`Budget` counters.
    """

    def __init__(
        self,
        config: TaskConfig | TabularConfig,
        sampler: ContextSampler | FixedContextSampler,
        proxy: Proxy,
        preferences: PreferenceData | None,
        pointwise: PointwiseData | None,
    ) -> None:
        self.config = config.public()  # no seed (nor tabular gold): the judge cannot be rebuilt from it
        self.sampler = sampler
        self.proxy = proxy.requires_grad_(False).eval()
        self.preferences = preferences
        self.pointwise = pointwise
        self.budget = Budget()
        self._proxy_on: dict[torch.device, Proxy] = {torch.device("cpu"): self.proxy}

    K = property(lambda self: self.sampler.K)
    d = property(lambda self: self.sampler.d)
    beta = property(lambda self: self.config.beta)

    def proxy_on(self, device: torch.device | str) -> Proxy:
        """The proxy moved to ``device`` (cached copy)."""
        device = torch.device(device)
        if device not in self._proxy_on:
            self._proxy_on[device] = copy.deepcopy(self.proxy).to(device)
        return self._proxy_on[device]

    @torch.no_grad()
    def proxy_reward(self, candidates: torch.Tensor, *, count: bool = True) -> torch.Tensor:
        """Proxy reward of every candidate: (..., d) -> (...); counts ``candidates[..., 0].numel()`` queries."""
        candidates = torch.as_tensor(candidates)
        if candidates.ndim < 1 or candidates.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(candidates.shape)}).")
        if count:
            self.budget.proxy_queries += int(np.prod(candidates.shape[:-1]))
        return self.proxy_on(candidates.device)(candidates)

    def ref_logp(self, candidates: torch.Tensor) -> torch.Tensor:
        """log π_ref over the K candidates of each context: (n, K, d) -> (n, K)."""
        candidates = torch.as_tensor(candidates)
        if candidates.ndim < 2 or candidates.shape[-1] != self.d:
            raise ValueError(f"candidates must have shape (..., K, d={self.d}) (got {tuple(candidates.shape)}).")
        return self.sampler.ref_logp(candidates)

    def sample_contexts(
        self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh training contexts: candidates (n, K, d) and ref_logp (n, K) on the generator's device."""
        n = check_int("n", n, low=1)
        check_footprint(f"sample_contexts({n})", n * self.K * (4 * self.d + 8), f"n {n} × K {self.K} × (d {self.d} "
                        "float32 + 1 float64)", "sample fewer contexts per call (e.g. in batches)")
        if generator is None:
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % 2**63)
            generator = torch_generator(check_int("seed", seed, low=0, high=2**63 - 1))
        out = self.sampler.sample(n, generator)
        self.budget.contexts_sampled += n
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proxy_on"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proxy_on = {torch.device("cpu"): self.proxy}

    def __repr__(self) -> str:
        return f"PublicTask(K={self.K}, d={self.d}, proxy={self.proxy.kind!r}, beta={self.beta})"


class Judge:
    """Holds θ*, the gold reward and the held-out evaluation contexts. Never handed to an agent.

    Attributes:
        theta: (d,) float64 unit gold direction (``None`` for tabular tasks).
        eval_candidates: (C, K, d) float32 evaluation contexts; eval_ref_logp: (C, K) float64.
        eval_gold: (C, K) float64 gold rewards; eval_proxy: (C, K) float64 proxy rewards.
    """

    def __init__(
        self,
        config: TaskConfig | TabularConfig,
        gold: Callable[[torch.Tensor], torch.Tensor],
        theta: torch.Tensor | None,
        eval_candidates: torch.Tensor,
        eval_ref_logp: torch.Tensor,
        proxy: Proxy,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.gold = gold
        self.theta = theta
        self.eval_candidates = eval_candidates
        # float64 and renormalized, so exact metrics see probabilities that sum to 1 to double precision
        self.eval_ref_logp = torch.log_softmax(eval_ref_logp.to(torch.float64), dim=-1)
        self.eval_gold = gold(eval_candidates).to(torch.float64)
        with torch.no_grad():
            self.eval_proxy = proxy(eval_candidates).to(torch.float64)
        self.extras = extras or {}

    def evaluate(self, policy: Any, **kwargs: Any) -> dict[str, float]:
        """Exact gold metrics of ``policy`` on the evaluation contexts (see :func:`tiltenv.evaluate`)."""
        return evaluate_on_judge(policy, self, **kwargs)

    def with_proxy(self, proxy: Proxy) -> "Judge":
        """This judge — same gold, θ*, evaluation contexts, and a subclass's own state (a multi-objective
        judge's per-dimension golds) — scoring another proxy."""
        judge = copy.copy(self)
        with torch.no_grad():
            judge.eval_proxy = proxy(self.eval_candidates).to(torch.float64)
        return judge


@dataclass
class World:
    task: PublicTask
    judge: Judge

    def with_proxy(self, proxy: Proxy, *, renormalize: bool = True) -> "World":
        """The same world (θ*, π_ref, evaluation contexts) with another proxy handed to the agent.

        For experiments that train a proxy in one world and deploy it in another with the same gold
        (e.g. labels drawn in contexts of few candidates, best-of-n over many): the seed fixes θ* for a
        given ``d``. The proxy is deep-copied; with ``renormalize`` it is centred and scaled under this
        world's π_ref on its normalization contexts (the world's own rule), otherwise used as given.

        Args:
            proxy: a :class:`~tiltenv.rewards.proxies.Proxy` over candidates of this world's dimension.
            renormalize: re-apply the Gao et al. normalization under this world's π_ref.
        Returns:
            a new :class:`World` (the task has fresh budget counters; the judge scores the new proxy).
        Raises:
            TypeError: if ``proxy`` is not a Proxy; ValueError: for a tabular world when renormalizing.
        The judge keeps its kind (a multi-objective world's judge still reports the per-dimension metrics).
        """
        if not isinstance(proxy, Proxy):
            raise TypeError(f"proxy must be a tiltenv Proxy (got {type(proxy).__name__}).")
        proxy = copy.deepcopy(proxy).requires_grad_(False).eval()
        config = self.judge.config
        if renormalize:
            stream = _norm_stream(config)
            if stream is None:
                raise ValueError(f"renormalize=True needs a world with π_ref normalization contexts (single-index or "
                                 f"multi-objective; this is a {type(config).__name__}): use renormalize=False, "
                                 "tabular proxies are used as given.")
            norm_x, norm_ref = self.task.sampler.sample(config.n_norm_contexts, torch_generator(stream))
            proxy.set_normalization(0.0, 1.0)
            _normalize_under_ref(proxy, norm_x, norm_ref)
        task = copy.copy(self.task)
        task.proxy = proxy
        task.budget = Budget()
        task._proxy_on = {torch.device("cpu"): proxy}
        return World(task, self.judge.with_proxy(proxy))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _orthogonal_unit(rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
    d = theta.shape[0]
    if d == 1:
        return np.zeros(1)
    v = rng.standard_normal(d)
    v -= (v @ theta) * theta
    return _unit(v)


def _normalize_under_ref(proxy: Proxy, candidates: torch.Tensor, ref_logp: torch.Tensor) -> None:
    """Centre and scale the proxy under π_ref pooled over contexts (Gao et al.), in place."""
    with torch.no_grad():
        r = proxy.raw(candidates).to(torch.float64)
    p = ref_logp.to(torch.float64).exp()
    mean = float((p * r).sum(-1).mean())
    var = float((p * (r - mean) ** 2).sum(-1).mean())
    proxy.set_normalization(mean, math.sqrt(var))


def _build_single_index(config: TaskConfig) -> World:
    seeds = seed_streams(config.seed)
    d = config.d
    theta = _unit(np.random.default_rng(seeds["theta"]).standard_normal(d))
    dir_rng = np.random.default_rng(seeds["directions"])
    theta_perp = _orthogonal_unit(dir_rng, theta)
    spurious = _orthogonal_unit(dir_rng, theta)
    style = _orthogonal_unit(dir_rng, theta)  # issue 12: drawn after the others, which stay as they were
    gamma = math.radians(config.shift_length_angle)
    length = math.cos(gamma) * theta + math.sin(gamma) * _orthogonal_unit(dir_rng, theta)
    alpha = config.ref_angle_rad
    u = math.cos(alpha) * theta + math.sin(alpha) * theta_perp
    theta_t = torch.from_numpy(theta)
    spurious_t = torch.from_numpy(spurious)
    member = config.member()  # the config's own link/scale/labeler, or (gold_family) the seed's draw of its family
    link = member.link
    a = member.gold_scale

    def gold(x: torch.Tensor) -> torch.Tensor:
        return a * link(x.to(torch.float64) @ theta_t.to(x.device))

    def utility(x: torch.Tensor) -> torch.Tensor:
        h = gold(x)
        if config.label_bias != 0.0:
            h = h + config.label_bias * (x.to(torch.float64) @ spurious_t.to(x.device))
        return h

    # u is public only when π_ref uses it (η ≠ 0: then it can be read off ref_logp anyway); with η = 0 it
    # would leak cos(α)·θ* for free.
    u_public = torch.from_numpy(u) if config.ref_eta != 0.0 else torch.zeros(d, dtype=torch.float64)
    sampler = ContextSampler(d, config.K, config.prompt_corr, config.ref_eta, u_public)
    spec = PROXIES[config.proxy]
    options = parse_options(config.proxy, config.proxy_options)
    prefs = points = ai_labeler = None
    if spec.needs_labels:
        label_ctx, label_ref = sampler.sample(config.n_labels, torch_generator(seeds["label_contexts"]))
        if config.shift_length_scale != 1.0:  # the labels' contexts never spread along the length direction
            label_ctx = compress_along(label_ctx, torch.from_numpy(length), config.shift_length_scale)
            label_ref = sampler.ref_logp(label_ctx)
        g_labels = torch_generator(seeds["labels"])
        if config.label_kind == "pairwise":
            prefs = make_preferences(label_ctx, label_ref, utility, temperature=member.label_temp,
                                     flip_rate=member.flip_rate, generator=g_labels)
        elif config.label_kind == "ai":
            seed_x, seed_ref = sampler.sample(config.ai_labeler_labels, torch_generator(seeds["ai_labeler"]))
            seed_prefs = make_preferences(seed_x, seed_ref, utility, temperature=member.label_temp,
                                          flip_rate=member.flip_rate, generator=torch_generator(seeds["ai_labeler"] ^ 1))
            ai_labeler = fit_ai_labeler(seed_prefs, torch.from_numpy(style), config.ai_bias)
            prefs = make_ai_preferences(label_ctx, label_ref, ai_labeler, generator=g_labels)
        else:
            points = make_pointwise(label_ctx, label_ref, utility, noise=config.pointwise_noise, generator=g_labels)
        del label_ctx, label_ref
    ctx = ProxyContext(
        d=d, theta=theta_t, gold=gold, link=link, gold_scale=a, preferences=prefs, pointwise=points,
        seed=seeds["proxy_init"], device=torch.device("cpu"),
        sample_ref=lambda n, g: sampler.sample(n, g),
    )
    proxy = build_proxy(spec, options, ctx, config)  # trained kinds go through the on-disk cache
    norm_x, norm_ref = sampler.sample(config.n_norm_contexts, torch_generator(seeds["norm_contexts"]))
    _normalize_under_ref(proxy, norm_x, norm_ref)
    eval_x, eval_ref = sampler.sample(config.n_eval_contexts, torch_generator(seeds["eval_contexts"]))
    task = PublicTask(config, sampler, proxy, prefs, points)
    judge = Judge(config, gold, theta_t, eval_x, eval_ref, proxy,
                  extras={"spurious_direction": spurious_t, "theta_perp": torch.from_numpy(theta_perp),
                          "style_direction": torch.from_numpy(style), "length_direction": torch.from_numpy(length),
                          "utility": utility, "ai_labeler": ai_labeler, "member": member})
    return World(task, judge)


def _build_tabular(config: TabularConfig) -> World:
    feats = torch.from_numpy(config.feature_matrix)
    gold_arms, proxy_arms, ref_arms = config.arms()  # the fields, or (gold_family) the seed's permuted, perturbed draw
    ref = torch.from_numpy(ref_arms)
    sampler = FixedContextSampler(feats, ref)
    proxy = TableProxy(feats, torch.from_numpy(proxy_arms))
    gold_table = TableProxy(feats, torch.from_numpy(gold_arms))

    def gold(x: torch.Tensor) -> torch.Tensor:
        return gold_table.raw(x.to(torch.float64))

    eval_x, eval_ref = sampler.sample(config.n_eval_contexts, torch_generator(0))
    task = PublicTask(config, sampler, proxy, None, None)
    return World(task, Judge(config, gold, None, eval_x, eval_ref, proxy))


#: Other task families (e.g. :mod:`tiltenv.worlds.multiobjective`): config class -> ``(build(config) -> World, check(config))``,
#: registered by the module that defines them (it imports this one, so this one cannot import it).
WORLD_BUILDERS: dict[type, tuple[Callable[[Any], World], Callable[[Any], None]]] = {}


#: Seed of the π_ref normalization contexts of a world kind's config (used to renormalize a swapped-in proxy).
NORM_STREAMS: dict[type, Callable[[Any], int]] = {}


def register_world(config_cls: type, build: Callable[[Any], World], check: Callable[[Any], None] = lambda c: None,
                   norm_stream: Callable[[Any], int] | None = None) -> None:
    """Make :func:`make_world` build configs of ``config_cls`` with ``build`` (``check`` runs first, uncached);
    ``norm_stream(config)``: the seed ``build`` draws its proxy-normalization contexts from, if it has them."""
    WORLD_BUILDERS[config_cls] = (build, check)
    if norm_stream is not None:
        NORM_STREAMS[config_cls] = norm_stream


def _norm_stream(config: Any) -> int | None:
    if type(config) in NORM_STREAMS:
        return NORM_STREAMS[type(config)](config)
    if isinstance(config, TaskConfig):
        return seed_streams(config.seed)["norm_contexts"]
    return None


def is_task_config(config: Any) -> bool:
    """Whether ``config`` is a task config :func:`make_world` can build."""
    return isinstance(config, (TaskConfig, TabularConfig)) or type(config) in WORLD_BUILDERS


@functools.lru_cache(maxsize=32)
def _make_world_cached(config: TaskConfig | TabularConfig) -> World:
    if type(config) in WORLD_BUILDERS:
        return WORLD_BUILDERS[type(config)][0](config)
    if isinstance(config, TabularConfig):
        return _build_tabular(config)
    return _build_single_index(config)


def make_world(config: TaskConfig | TabularConfig, *, fresh: bool = False) -> World:
    """Build (or fetch from the in-process cache) the world of ``config``.

    Args:
        config: a :class:`TaskConfig` or :class:`TabularConfig`.
        fresh: bypass the in-process cache (the task's budget counters are shared between cached users).
    Returns:
        :class:`World` with ``.task`` (public) and ``.judge`` (hidden gold).
    Raises:
        TypeError: if ``config`` is not a task config.
    """
    if not is_task_config(config):
        names = ", ".join(["TaskConfig", "TabularConfig", *(c.__name__ for c in WORLD_BUILDERS)])
        raise TypeError(f"config must be one of {names} (got {type(config).__name__}).")
    if getattr(config, "seed", 0) is None or getattr(config, "gold", 0) is None:
        raise ValueError(
            "this is a public view of a task config (its seed or gold is hidden): its world cannot be rebuilt; "
            "use the PublicTask you were given."
        )
    if isinstance(config, TaskConfig):  # the whole footprint against the memory available now, before building
        from tiltenv.worlds.config import footprint_bytes, footprint_terms

        check_footprint("building this task", footprint_bytes(config.n_labels, config.n_norm_contexts,
                                                              config.n_eval_contexts, config.K, config.d),
                        footprint_terms(config), "lower n_labels, n_norm_contexts, n_eval_contexts, K or d")
    elif type(config) in WORLD_BUILDERS:
        WORLD_BUILDERS[type(config)][1](config)
    if fresh:
        return _make_world_cached.__wrapped__(config)
    cached = _make_world_cached(config)
    task = copy.copy(cached.task)  # shares the read-only label tensors, not the counters nor the proxy
    task.budget = Budget()
    task.proxy = copy.deepcopy(cached.task.proxy)  # an agent editing its proxy must not change anyone else's
    task._proxy_on = {torch.device("cpu"): task.proxy}
    return World(task, cached.judge)
