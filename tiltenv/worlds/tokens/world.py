"""The token world: a public :class:`TokenTask` and a hidden :class:`TokenJudge`, built by ``make_world``.

``make_world(TokenConfig(...))`` draws every random quantity from independent streams of
``np.random.SeedSequence(config.seed)``: θ* (unit, R^d), π_ref (an :class:`~tiltenv.worlds.tokens.model.ARModel`),
the public feature embeddings, the label prompts and labels, the proxy's initialization, the normalization and
evaluation prompts. It reuses the single-index machinery unchanged on features φ(c, y):

* gold ``r*(c, y) = gold_scale · σ*(<θ*, φ(c, y)>)`` with the links of :mod:`tiltenv.rewards.links`;
* labels: per label prompt, two responses sampled from π_ref, compared by the Bradley–Terry labeler of
  :func:`tiltenv.rewards.labels.make_preferences` (the pair's order is random; the token pairs are kept in the same
  order in ``task.token_preferences``);
* the proxy: any kind of :data:`tiltenv.rewards.proxies.PROXIES`, trained on the φ pairs, centred and scaled under π_ref
  pooled over prompts (Gao et al.) — exactly, over all V^L responses of the normalization prompts;
* the judge's arrays ``eval_ref_logp``, ``eval_gold``, ``eval_proxy`` are (C, V^L) float64 over the evaluation
  prompts, so :func:`tiltenv.worlds.scoring.metrics_of_logp` (every exact metric) applies with K = V^L.

The bandit view: ``task.sample_contexts(n)`` returns the features of all V^L responses of n fresh prompts and
their π_ref log-probabilities, so the bandit baselines run on the same task (K = V^L candidates a context).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from tiltenv import metrics as M
from tiltenv._streams import TOKEN_STREAMS, token_seed_streams  # noqa: F401 (public here too)
from tiltenv._validation import check_footprint, check_int
from tiltenv.rewards.labels import make_preferences
from tiltenv.rewards.proxies import PROXIES, Proxy, ProxyContext
from tiltenv.rewards.proxy_cache import build_proxy
from tiltenv.worlds.scoring import EvalResult, evaluate_on_judge, metrics_of_logp
from tiltenv.worlds.tokens.config import TokenConfig
from tiltenv.worlds.tokens.model import ARModel, Featurizer
from tiltenv.worlds.tokens.reward_model import SEQUENCE_PROXIES, is_sequence_proxy, parse_token_proxy, transformer_spec
from tiltenv.worlds.tokens.tree import CHUNK_BYTES, sample_responses, sequence_logp, tree_logp
from tiltenv.worlds.world import Budget, Judge, PublicTask, World, register_world, torch_generator

__all__ = ["TOKEN_STREAMS", "token_seed_streams", "TokenSampler", "TokenTask", "TokenJudge", "build_token_world"]


def _prompt_chunk(K: int, d: int) -> int:
    """Prompts whose (K, d) float32 features plus three (K,) float64 arrays fit :data:`CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (K * (4 * d + 24)))


class TokenSampler:
    """Prompts and the bandit view. Prompts are uniform over V^P token sequences."""

    def __init__(self, config: TokenConfig, ref_model: ARModel, featurizer: Featurizer) -> None:
        self.V, self.L, self.P, self.d, self.K = config.V, config.L, config.prompt_len, config.d, config.K
        self.ref_model, self.featurizer = ref_model, featurizer
        self.prompt_corr, self.ref_eta = 0.0, float("nan")

    def prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.V, (n, self.P), generator=generator, device=generator.device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The bandit view of ``n`` fresh prompts: features (n, V^L, d) float32, log π_ref (n, V^L) float32."""
        p = self.prompts(n, generator).cpu()
        return self.featurizer.all_responses(p), tree_logp(self.ref_model, p, self.L).to(torch.float32)

    def sample_ref(self, n: int, generator: torch.Generator, draws: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``draws`` π_ref responses of each of ``n`` prompts, uniformly weighted (an unbiased π_ref sample, for a
        proxy kind that normalizes itself): (n, draws, d) features and (n, draws) log-weights."""
        p = self.prompts(n, generator).cpu()
        rep = p.repeat_interleave(draws, 0)
        y, _ = sample_responses(self.ref_model, rep, self.L, generator)
        x = self.featurizer(rep, y).reshape(n, draws, self.d)
        return x, torch.full((n, draws), -math.log(draws))

    def ref_logp(self, candidates: torch.Tensor) -> torch.Tensor:
        raise ValueError("a token task's π_ref is over responses, not feature vectors: use the ref_logp returned by "
                         "sample_contexts, or task.ref_sequence_logp(prompts, responses).")


class TokenTask(PublicTask):
    """Everything an agent may use in a token task: π_ref (``ref_model``), the public featurizer, the proxy,
    the preference pairs (as φ in ``preferences``, as tokens in ``token_preferences``), a prompt sampler.

    Attributes:
        V, L, prompt_len: vocabulary size, response length, prompt length.
        ref_model: the frozen π_ref (:class:`~tiltenv.worlds.tokens.model.ARModel`).
        featurizer: the public φ (:class:`~tiltenv.worlds.tokens.model.Featurizer`).
        token_preferences: dict of int64 ``prompts`` (n, P), ``a``, ``b`` (n, L) and float32 ``label`` (n,):
            1.0 where ``a ≻ b``; row i is the pair of ``preferences`` row i.
    """

    def __init__(self, config: TokenConfig, sampler: TokenSampler, proxy: Proxy, preferences: Any,
                 token_preferences: dict[str, torch.Tensor]) -> None:
        super().__init__(config, sampler, proxy, preferences, None)
        self.V, self.L, self.prompt_len = config.V, config.L, config.prompt_len
        self.ref_model = sampler.ref_model
        self.featurizer = sampler.featurizer
        self.token_preferences = token_preferences

    def sample_prompts(self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Fresh training prompts, (n, prompt_len) int64 (counted in ``budget.contexts_sampled``)."""
        n = check_int("n", n, low=1)
        if generator is None:
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % 2**63)
            generator = torch_generator(check_int("seed", seed, low=0, high=2**63 - 1))
        self.budget.contexts_sampled += n
        return self.sampler.prompts(n, generator)

    def features(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """φ(c, y): (N, P), (N, L) -> (N, d) float32."""
        return self.featurizer(prompts.cpu(), responses.cpu()).to(prompts.device)

    def reward(self, prompts: torch.Tensor, responses: torch.Tensor, *, count: bool = True) -> torch.Tensor:
        """The proxy reward of each full response: (N, P), (N, L) -> (N,) (counted in ``budget.proxy_queries``).
        A sequence-native proxy (``proxy="transformer"``) reads the tokens; the others read φ(c, y)."""
        if is_sequence_proxy(self.proxy):
            if count:
                self.budget.proxy_queries += int(responses.shape[0])
            with torch.no_grad():
                return self.proxy.score_tokens(prompts, responses)
        return self.proxy_reward(self.features(prompts, responses), count=count)

    def ref_sequence_logp(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """log π_ref(y | c): (N,) float64."""
        with torch.no_grad():
            return sequence_logp(self.ref_model, prompts, responses)

    def make_policy(self) -> ARModel:
        """A trainable policy initialized at π_ref (same architecture and weights: step 0 is π_ref exactly)."""
        return self.ref_model.copy_trainable()

    def sample_responses(self, policy: Any, prompts: torch.Tensor, generator: torch.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """One response per prompt from ``policy`` (π_ref if None): tokens (N, L) and log π(y|c) (N,)."""
        return sample_responses(self.ref_model if policy is None else policy, prompts, self.L, generator)

    def __repr__(self) -> str:
        return f"TokenTask(V={self.V}, L={self.L}, d={self.d}, proxy={self.proxy.kind!r}, beta={self.beta})"


class TokenJudge(Judge):
    """θ*, the gold and the evaluation prompts of a token task, with every response of each prompt enumerated.

    Attributes:
        eval_prompts: (C, P) int64; eval_ref_logp, eval_gold, eval_proxy: (C, V^L) float64.
    ``evaluate(policy)`` takes a sequence policy (tree-enumerated, :func:`~tiltenv.worlds.tokens.tree.tree_logp`) or a
    (C, V^L) array / bandit-view policy over the response features (:func:`tiltenv.evaluate`'s forms).
    """

    def __init__(self, config: TokenConfig, gold: Any, theta: torch.Tensor, eval_prompts: torch.Tensor,
                 ref_model: ARModel, featurizer: Featurizer, proxy: Proxy) -> None:
        self.config, self.gold, self.theta = config, gold, theta
        self.eval_prompts, self.ref_model, self.featurizer = eval_prompts, ref_model, featurizer
        self.L, self.V = config.L, config.V
        self.eval_ref_logp = tree_logp(ref_model, eval_prompts, config.L)
        self.eval_gold, self.eval_proxy = self._score(gold), self._score(proxy)
        self.extras: dict[str, Any] = {}
        self._candidates: torch.Tensor | None = None

    def _score(self, fn: Any) -> torch.Tensor:
        if is_sequence_proxy(fn):
            return fn.score_all(self.eval_prompts, self.L)
        C, K, d = self.eval_prompts.shape[0], self.config.K, self.config.d
        out = torch.empty((C, K), dtype=torch.float64)
        step = _prompt_chunk(K, d)
        with torch.no_grad():
            for s in range(0, C, step):
                out[s:s + step] = fn(self.featurizer.all_responses(self.eval_prompts[s:s + step])).to(torch.float64)
        return out

    @property
    def eval_candidates(self) -> torch.Tensor:
        """The bandit view of the evaluation prompts, (C, V^L, d) float32 (built on first use; memory checked)."""
        if self._candidates is None:
            C, K, d = self.eval_prompts.shape[0], self.config.K, self.config.d
            check_footprint("the token judge's bandit view", 4 * C * K * d, f"C {C} × V^L {K} × d {d} float32",
                            "evaluate a sequence policy (tree-enumerated) instead, or use fewer n_eval_contexts")
            self._candidates = self.featurizer.all_responses(self.eval_prompts)
        return self._candidates

    def policy_logp(self, policy: Any) -> torch.Tensor:
        """(C, V^L) float64 log-probabilities of a sequence policy over the evaluation prompts."""
        return tree_logp(policy, self.eval_prompts, self.L)

    def evaluate(self, policy: Any, **kwargs: Any) -> EvalResult:
        """Exact metrics of a sequence policy (or any :func:`tiltenv.evaluate` policy form over the bandit view)."""
        if callable(getattr(policy, "next_logits", None)):
            return metrics_of_logp(self.policy_logp(policy), self, **kwargs)
        return evaluate_on_judge(policy, self, **kwargs)

    def best_of_n_logp(self, n: int) -> torch.Tensor:
        """The exact law of best-of-n over π_ref samples ranked by the proxy, (C, V^L) (ties split evenly)."""
        return M.best_of_n_logp(self.eval_ref_logp, self.eval_proxy, n)

    def with_proxy(self, proxy: Proxy) -> "TokenJudge":
        judge = copy.copy(self)
        judge.eval_proxy = self._score(proxy)
        return judge

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_candidates"] = None
        return state


def _exact_normalize(proxy: Proxy, featurizer: Featurizer, ref_model: ARModel, prompts: torch.Tensor, L: int) -> None:
    """Centre and scale the proxy under π_ref pooled over prompts (the rule of
    :func:`tiltenv.worlds.world._normalize_under_ref`), exactly over all V^L responses, in chunks of prompts."""
    K, d = featurizer.V**L, featurizer.d
    p = tree_logp(ref_model, prompts, L).exp()
    if is_sequence_proxy(proxy):  # scored over the prefix tree from the tokens
        r = proxy.raw_all(prompts, L)
    else:
        r = torch.empty_like(p)
        step = _prompt_chunk(K, d)
        with torch.no_grad():
            for s in range(0, prompts.shape[0], step):
                r[s:s + step] = proxy.raw(featurizer.all_responses(prompts[s:s + step])).to(torch.float64)
    mean = float((p * r).sum(-1).mean())
    var = float((p * (r - mean) ** 2).sum(-1).mean())
    proxy.set_normalization(mean, math.sqrt(var))


def build_token_world(config: TokenConfig) -> World:
    seeds = token_seed_streams(config.seed)
    d, L = config.d, config.L
    theta_np = np.random.default_rng(seeds["theta"]).standard_normal(d)
    theta = torch.from_numpy(theta_np / np.linalg.norm(theta_np))
    member = config.member()  # the config's own link/scale/labeler, or (gold_family) the seed's draw of its family
    link = member.link
    a = member.gold_scale

    def gold(x: torch.Tensor) -> torch.Tensor:
        return a * link(x.to(torch.float64) @ theta.to(x.device))

    ref_model = ARModel.draw(config.V, config.ref_hidden, config.ref_sharpness, seeds["ref_model"])
    featurizer = Featurizer(config.V, L, config.prompt_len, d, config.prompt_weight, seeds["features"])
    sampler = TokenSampler(config, ref_model, featurizer)
    sequence = config.proxy in SEQUENCE_PROXIES
    options = parse_token_proxy(config.proxy, config.proxy_options)
    prefs, token_prefs = None, {}
    if sequence or PROXIES[config.proxy].needs_labels:
        lp = sampler.prompts(config.n_labels, torch_generator(seeds["label_prompts"]))
        g = torch_generator(seeds["labels"])
        ya, lpa = sample_responses(ref_model, lp, L, g)
        yb, lpb = sample_responses(ref_model, lp, L, g)
        xa, xb = featurizer(lp, ya), featurizer(lp, yb)
        prefs = make_preferences(torch.stack([xa, xb], 1), torch.stack([lpa, lpb], 1).to(torch.float32), gold,
                                 temperature=member.label_temp, flip_rate=member.flip_rate, generator=g)
        swapped = (prefs.x_a != xa).any(-1, keepdim=True)  # make_preferences draws the pair's order at random
        token_prefs = {"prompts": lp, "a": torch.where(swapped, yb, ya), "b": torch.where(swapped, ya, yb),
                       "label": prefs.label}
    ctx = ProxyContext(d=d, theta=theta, gold=gold, link=link, gold_scale=a, preferences=prefs, pointwise=None,
                       seed=seeds["proxy_init"], device=torch.device("cpu"), sample_ref=sampler.sample_ref)
    spec = (transformer_spec(config.V, config.prompt_len, L, token_prefs, seeds["sequence_proxy"]) if sequence
            else PROXIES[config.proxy])
    proxy = build_proxy(spec, options, ctx, config)
    norm_prompts = sampler.prompts(config.n_norm_contexts, torch_generator(seeds["norm_prompts"]))
    _exact_normalize(proxy, featurizer, ref_model, norm_prompts, L)
    proxy = proxy.requires_grad_(False).eval()
    eval_prompts = sampler.prompts(config.n_eval_contexts, torch_generator(seeds["eval_prompts"]))
    task = TokenTask(config, sampler, proxy, prefs, token_prefs)
    judge = TokenJudge(config, gold, theta, eval_prompts, ref_model, featurizer, proxy)
    judge.extras["member"] = member
    return World(task, judge)


def token_footprint(config: TokenConfig) -> int:
    """Estimated peak bytes of building a token world: the judge's three (C, V^L) float64 arrays, the
    normalization's two (n_norm, V^L) float64 arrays and one chunk of temporaries."""
    K = config.K
    return 8 * K * (3 * config.n_eval_contexts + 2 * config.n_norm_contexts) + 2 * CHUNK_BYTES


def _check(config: TokenConfig) -> None:
    check_footprint("building this token task", token_footprint(config),
                    f"(3 × n_eval_contexts {config.n_eval_contexts} + 2 × n_norm_contexts {config.n_norm_contexts}) × "
                    f"V^L {config.K} float64", "lower n_eval_contexts, n_norm_contexts, V or L")


register_world(TokenConfig, build_token_world, _check, norm_stream=None)
