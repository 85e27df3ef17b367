"""Frozen, validated task configurations.

A :class:`TaskConfig` holds every parameter that defines a single-index task: its fields are exactly the
keyword arguments of ``gym.make("tiltenv/SingleIndex-v0", **kwargs)`` and so end up in ``env.spec.kwargs``
(the provenance record). A :class:`TabularConfig` defines a task by explicit arms.

Example:
    >>> from tiltenv.worlds.config import TaskConfig
    >>> TaskConfig(d=8, K=32, link="hump").K
    32
    >>> TaskConfig(link="humpp")
    Traceback (most recent call last):
    ...
    ValueError: link must be one of ['abs', 'he2', 'he3', 'hump', 'linear', 'relu', 'step', 'tanh'] (got 'humpp'). Did you mean 'hump'?
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiltenv._streams import seed_streams
from tiltenv._validation import ParameterTypeError, check_choice, check_float, check_int, suggest
from tiltenv.rewards.links import LINKS
from tiltenv._cost import check_proxy_cost
from tiltenv.rewards.proxies import check_proxy, parse_options

__all__ = ["TaskConfig", "TabularConfig", "LABEL_KINDS", "config_from_kwargs"]

LABEL_KINDS = ("pairwise", "pointwise", "ai")  # "ai": labels from a labeler model (tiltenv.rewards.feedback)
#: Largest change of one arm's gold or proxy value in a tabular world drawn from its family (``gold_family``).
TABULAR_PERTURBATION = 0.1


def _freeze(value: Any) -> Any:
    """Make mappings/sequences hashable and JSON-stable (sorted item tuples / tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return tuple(_freeze(v) for v in value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def frozen_proxy_kwargs(proxy: Any, proxy_kwargs: Any) -> Any:
    """A config's ``proxy`` checked to be a name and its ``proxy_kwargs`` (None: none) as a frozen mapping; the one
    check of these two fields for every config kind."""
    if not isinstance(proxy, str):
        raise ParameterTypeError(f"proxy must be a proxy name (got {proxy!r}).")
    pk = () if proxy_kwargs is None else proxy_kwargs
    try:
        pk = dict(pk)
    except (TypeError, ValueError):
        raise ParameterTypeError(f"proxy_kwargs must be a mapping of option names to values (got {pk!r}).") from None
    return _freeze(pk)


class ConfigMethods:
    """What every task config shares: ``replace`` and the stable ``digest`` that keys caches and results (one
    formula for single-index, tabular and multi-objective configs)."""

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Stable hash of the full configuration (for caches and result keys)."""
        blob = json.dumps({"kind": type(self).__name__, **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def check_gold_family(cfg: Any, links: Sequence[str]) -> None:
    """Validate a config's ``gold_family`` flag (stored as a plain bool); with it, every link in ``links`` must have a
    family (else a clear error naming the links that have one). One check for every world kind."""
    if not isinstance(cfg.gold_family, (bool, np.bool_)):
        raise ParameterTypeError(f"gold_family must be True or False (got {cfg.gold_family!r}).")
    object.__setattr__(cfg, "gold_family", bool(cfg.gold_family))
    if cfg.gold_family:
        from tiltenv.rewards.families import family_of_link

        for link in links:
            family_of_link(link)


class GoldMemberMethods:
    """``family()`` and ``member()`` of a config with one gold link (``link``, ``gold_scale``, ``label_temp``,
    ``flip_rate``, ``gold_family``, ``seed``); ``_seed_streams`` names its world's streams (the member is drawn from
    the ``family`` one)."""

    _seed_streams = staticmethod(seed_streams)

    def family(self):
        """The :class:`tiltenv.rewards.families.GoldFamily` of ``link`` (its ranges are public), or None for a fixed member."""
        from tiltenv.rewards.families import family_of_link

        return family_of_link(self.link) if self.gold_family else None

    def member(self):
        """The world's gold member (:class:`tiltenv.rewards.families.Member`): the config's own link, scale and
        labeler, or with ``gold_family`` the draw of the link's family from the seed's ``family`` stream (needs the
        seed)."""
        from tiltenv.rewards.families import draw_member, fixed_member

        if not self.gold_family:
            return fixed_member(self.link, self.gold_scale, self.label_temp, self.flip_rate)
        if self.seed is None:
            raise ValueError("this public config hides its gold member (gold_family=True and no seed).")
        return draw_member(self.link, self.gold_scale, self.label_temp, self.flip_rate,
                           seed=self._seed_streams(self.seed)["family"])


class IndexConfigMethods(ConfigMethods):
    """Shared by the configs of single-index worlds (``ref_angle`` and ``proxy_kwargs`` fields)."""

    @property
    def ref_angle_rad(self) -> float:
        return math.radians(self.ref_angle)

    @property
    def proxy_options(self) -> dict[str, Any]:
        return dict(self.proxy_kwargs)


@dataclass(frozen=True)
class TaskConfig(GoldMemberMethods, IndexConfigMethods):
    """A single-index contextual bandit (DESIGN §1).

    Each context offers ``K`` candidates ``x_k ∈ R^d``; gold ``r*(x) = gold_scale · σ*(<θ*, x>)``;
    ``π_ref(k|x) ∝ exp(ref_eta <u, x_k>)`` with ``u = cos(ref_angle) θ* + sin(ref_angle) θ⊥``.
    """

    d: int = field(default=16, metadata={"help": "Dimension of each candidate x ∈ R^d."})
    K: int = field(default=16, metadata={"help": "Number of candidate responses per context."})
    link: str = field(default="relu", metadata={"help": f"Gold link σ*, one of {sorted(LINKS)}."})
    gold_scale: float = field(default=1.0, metadata={"help": "a in r*(x) = a σ*(<θ*, x>); > 0."})
    prompt_corr: float = field(
        default=0.0, metadata={"help": "ρ ∈ [0, 1): x_k = sqrt(ρ) c + sqrt(1-ρ) ε_k with a shared c per context."}
    )
    ref_eta: float = field(default=0.0, metadata={"help": "η of π_ref ∝ exp(η <u, x>); 0 is uniform."})
    ref_angle: float = field(
        default=60.0, metadata={"help": "Angle α (degrees, [0, 180]) between u and θ*."}
    )
    n_labels: int = field(default=2000, metadata={"help": "Number of preference pairs (or pointwise scores)."})
    label_kind: str = field(default="pairwise", metadata={"help": f"One of {LABEL_KINDS}."})
    label_temp: float = field(
        default=0.0, metadata={"help": "τ of the Bradley–Terry labeler P(a≻b)=sigmoid(Δh/τ); 0 = deterministic."}
    )
    flip_rate: float = field(default=0.0, metadata={"help": "Symmetric label flip probability ε ∈ [0, 0.5)."})
    label_bias: float = field(
        default=0.0, metadata={"help": "λ of the biased utility h = r* + λ <v, x>, v ⟂ θ* a spurious direction."}
    )
    pointwise_noise: float = field(default=0.5, metadata={"help": "Std of y = r*(x) + noise for pointwise labels."})
    # --- the reward model's life cycle (issue 12): AI feedback, label cost, distribution shift, active labeling
    ai_labeler_labels: int = field(
        default=200, metadata={"help": "label_kind='ai': gold-labeled pairs (the human labeler's) the AI labeler model "
                                       "(a linear BT reward model) is trained on."})
    ai_bias: float = field(
        default=0.0, metadata={"help": "label_kind='ai': self-preference bias of the AI labeler toward a style "
                                       "direction s ⟂ θ*, in units of its own reward scale: h_AI = ŵ·x + ai_bias ||ŵ|| <s, x>."})
    human_label_cost: float = field(default=1.0, metadata={"help": "Cost of one human (gold-labeler) label; ≥ 0."})
    ai_label_cost: float = field(default=0.001, metadata={"help": "Cost of one AI label; ≥ 0."})
    label_cost_budget: float | None = field(
        default=None, metadata={"help": "Refuse a task whose label_cost (n_labels at its kind's price) exceeds this; "
                                        "None: no limit."})
    shift_length_scale: float = field(
        default=1.0, metadata={"help": "Distribution shift: the labels' contexts keep this fraction of their spread "
                                       "along a hidden length-like direction ℓ (1: as π_ref, 0: labels never vary it)."})
    shift_length_angle: float = field(
        default=45.0, metadata={"help": "Angle (degrees, [0, 180]) between the length-like direction ℓ and θ*."})
    label_budget: int = field(
        default=0, metadata={"help": "Labels an agent may request through a label channel (tiltenv.lifecycle.active); 0: none."})
    proxy: str = field(default="linear", metadata={"help": "Proxy reward model kind (see tiltenv.rewards.proxies.PROXIES)."})
    proxy_kwargs: Any = field(default=(), metadata={"help": "Keyword arguments of the proxy (a mapping)."})
    beta: float = field(default=0.25, metadata={"help": "KL coefficient β of the scored objective J_β; > 0."})
    n_eval_contexts: int = field(default=4096, metadata={"help": "Held-out contexts the judge scores on."})
    n_norm_contexts: int = field(default=4096, metadata={"help": "Contexts used to normalize the proxy under π_ref."})
    seed: int | None = field(
        default=0,
        metadata={"help": "Task seed: θ*, labels, proxy init, evaluation contexts. None in a public view (hidden)."},
    )
    gold_family: bool = field(
        default=False,
        metadata={"help": "True (the leaderboard's test split): the link's shape, gold_scale, label_temp and flip_rate "
                          "are drawn per world from the family of `link` (tiltenv.rewards.families states the ranges; the "
                          "fields are its centre), so the member is hidden with the seed. False: exactly these values."},
    )

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("d", check_int("d", self.d, low=1, high=100_000))
        set_("K", check_int("K", self.K, low=2, high=1_000_000))
        check_choice("link", self.link, sorted(LINKS))
        set_("gold_scale", check_float("gold_scale", self.gold_scale, low=0.0, low_open=True))
        set_("prompt_corr", check_float("prompt_corr", self.prompt_corr, low=0.0, high=1.0, high_open=True))
        set_("ref_eta", check_float("ref_eta", self.ref_eta))
        set_("ref_angle", check_float("ref_angle", self.ref_angle, low=0.0, high=180.0))
        set_("n_labels", check_int("n_labels", self.n_labels, low=1))
        check_choice("label_kind", self.label_kind, LABEL_KINDS)
        set_("label_temp", check_float("label_temp", self.label_temp, low=0.0))
        set_("flip_rate", check_float("flip_rate", self.flip_rate, low=0.0, high=0.5, high_open=True))
        set_("label_bias", check_float("label_bias", self.label_bias))
        set_("pointwise_noise", check_float("pointwise_noise", self.pointwise_noise, low=0.0))
        _check_lifecycle(self, set_)
        set_("proxy_kwargs", frozen_proxy_kwargs(self.proxy, self.proxy_kwargs))
        set_("beta", check_float("beta", self.beta, low=0.0, low_open=True))
        set_("n_eval_contexts", check_int("n_eval_contexts", self.n_eval_contexts, low=1))
        set_("n_norm_contexts", check_int("n_norm_contexts", self.n_norm_contexts, low=2))
        _check_budget_size(self)
        if self.seed is not None:
            set_("seed", check_int("seed", self.seed, low=0, high=2**63 - 1))
        check_gold_family(self, (self.link,))
        check_proxy(self.proxy, dict(self.proxy_kwargs))
        check_proxy_cost(self.proxy, parse_options(self.proxy, dict(self.proxy_kwargs)), d=self.d,
                         n_labels=self.n_labels, label_kind=self.label_kind)

    # ------------------------------------------------------------------ helpers
    @property
    def label_cost(self) -> float:
        """Cost of the task's label set: ``n_labels`` at its kind's price (an AI labeler's own training pairs are
        its provenance, :attr:`labeler_cost`, paid once per labeler, not per task)."""
        return self.n_labels * (self.ai_label_cost if self.label_kind == "ai" else self.human_label_cost)

    @property
    def labeler_cost(self) -> float:
        """One-off cost of the AI labeler's gold-labeled training pairs (0 for human labels)."""
        return self.ai_labeler_labels * self.human_label_cost if self.label_kind == "ai" else 0.0

    def public(self) -> "TaskConfig":
        """What an agent may know: everything but the seed (from which θ* and the judge could be rebuilt).

        With ``gold_family`` the member (link shape, gold scale, labeler τ and ε) is drawn from the seed, so the
        public view names only the family (:meth:`family`) and its centre: every member has the same public view."""
        return dataclasses.replace(self, seed=None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["proxy_kwargs"] = dict(self.proxy_kwargs)
        return out


@dataclass(frozen=True)
class TabularConfig(ConfigMethods):
    """A task given by explicit arms: one fixed context of K arms (e.g. Shang et al.'s 5-arm bandit).

    The proxy is used as given (no normalization): controlled experiments need the paper's numbers.
    ``features`` (K × d) are what the agent observes; default one-hot arms (d = K).
    """

    gold: Sequence[float] | None = (0.0, 0.3, 0.5, 0.8, 1.0)  # None in a public view (hidden)
    proxy: Sequence[float] = (0.0, 0.3, 0.5, 1.2, 0.9)
    ref_probs: Sequence[float] = (0.2, 0.2, 0.2, 0.2, 0.2)
    features: Any = None
    beta: float = 0.1
    n_eval_contexts: int = 1
    seed: int | None = 0  # None in a public view (hidden)
    #: True (the leaderboard's test split): each world permutes the arms and perturbs every gold and proxy value by
    #: up to ±TABULAR_PERTURBATION (from the seed), so no test world's gold is in public source; the fields are the
    #: centre (the paper's table).
    gold_family: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        arrays = {}
        for name in ("gold", "proxy", "ref_probs") if self.gold is not None else ("proxy", "ref_probs"):
            try:
                arr = np.asarray(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a sequence of numbers (got {getattr(self, name)!r}).") from None
            if arr.ndim != 1 or arr.size < 2:
                raise ValueError(f"{name} must be a 1-D sequence of at least 2 arms (got shape {arr.shape}).")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite (got {arr.tolist()}).")
            arrays[name] = arr
        K = arrays["proxy"].size
        for name in ("gold", "ref_probs"):
            if name in arrays and arrays[name].size != K:
                raise ValueError(f"{name} has {arrays[name].size} arms but proxy has {K}; they must match.")
        p = arrays["ref_probs"]
        if np.any(p < 0) or not math.isclose(p.sum(), 1.0, rel_tol=0, abs_tol=1e-6):
            raise ValueError(f"ref_probs must be non-negative and sum to 1 (got {p.tolist()}, sum {p.sum():g}).")
        if self.features is not None:
            f = np.asarray(self.features, dtype=np.float64)
            if f.ndim != 2 or f.shape[0] != K:
                raise ValueError(f"features must have shape (K={K}, d) (got {f.shape}).")
            if len({tuple(r) for r in f.tolist()}) != K:
                raise ValueError("features must give every arm a distinct row.")
            set_("features", _freeze(f))
        for name, arr in arrays.items():
            set_(name, _freeze(arr))
        set_("beta", check_float("beta", self.beta, low=0.0, low_open=True))
        set_("n_eval_contexts", check_int("n_eval_contexts", self.n_eval_contexts, low=1))
        if self.seed is not None:
            set_("seed", check_int("seed", self.seed, low=0, high=2**63 - 1))
        if not isinstance(self.gold_family, (bool, np.bool_)):
            raise ParameterTypeError(f"gold_family must be True or False (got {self.gold_family!r}).")
        set_("gold_family", bool(self.gold_family))

    def public(self) -> "TabularConfig":
        """What an agent may know: the arms' proxy and π_ref (with ``gold_family``: the centre's), not their gold,
        nor the seed (a test seed would rebuild a drawn world)."""
        return dataclasses.replace(self, gold=None, seed=None)

    def arms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The world's ``(gold, proxy, ref_probs)``: the fields, or with ``gold_family`` the seed's draw (arms
        permuted, gold and proxy each perturbed uniformly by up to ±:data:`TABULAR_PERTURBATION`)."""
        gold = np.asarray(self.gold, dtype=np.float64)
        proxy = np.asarray(self.proxy, dtype=np.float64)
        ref = np.asarray(self.ref_probs, dtype=np.float64)
        if not self.gold_family:
            return gold, proxy, ref
        if self.seed is None:
            raise ValueError("this public config hides its arms (gold_family=True and no seed).")
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 17]))
        perm = rng.permutation(self.K)
        d = TABULAR_PERTURBATION
        return (gold[perm] + rng.uniform(-d, d, self.K), proxy[perm] + rng.uniform(-d, d, self.K), ref[perm])

    @property
    def K(self) -> int:
        return len(self.proxy)

    @property
    def feature_matrix(self) -> np.ndarray:
        return np.eye(self.K) if self.features is None else np.asarray(self.features, dtype=np.float64)

    @property
    def d(self) -> int:
        return self.feature_matrix.shape[1]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = json.loads(json.dumps(v))
        return out


def _check_lifecycle(cfg: "TaskConfig", set_) -> None:
    """The issue-12 fields: AI labels and their cost, the shifted label distribution, the label channel budget."""
    set_("ai_labeler_labels", check_int("ai_labeler_labels", cfg.ai_labeler_labels, low=2))
    set_("ai_bias", check_float("ai_bias", cfg.ai_bias))
    set_("human_label_cost", check_float("human_label_cost", cfg.human_label_cost, low=0.0))
    set_("ai_label_cost", check_float("ai_label_cost", cfg.ai_label_cost, low=0.0))
    if cfg.label_cost_budget is not None:
        set_("label_cost_budget", check_float("label_cost_budget", cfg.label_cost_budget, low=0.0))
    set_("shift_length_scale", check_float("shift_length_scale", cfg.shift_length_scale, low=0.0, high=1.0))
    set_("shift_length_angle", check_float("shift_length_angle", cfg.shift_length_angle, low=0.0, high=180.0))
    set_("label_budget", check_int("label_budget", cfg.label_budget, low=0))
    if cfg.ai_bias != 0.0 and cfg.label_kind != "ai":
        raise ValueError(f"ai_bias={cfg.ai_bias:g} only applies to AI labels; set label_kind='ai' "
                         f"(got label_kind={cfg.label_kind!r}) or ai_bias=0.")
    if cfg.label_cost_budget is not None and cfg.label_cost > cfg.label_cost_budget * (1 + 1e-12):
        price = cfg.ai_label_cost if cfg.label_kind == "ai" else cfg.human_label_cost
        raise ValueError(f"label_cost_budget={cfg.label_cost_budget:g} is exceeded: n_labels {cfg.n_labels} × "
                         f"{cfg.label_kind} label cost {price:g} = {cfg.label_cost:g}; lower n_labels to at most "
                         f"{int(cfg.label_cost_budget / price) if price > 0 else cfg.n_labels} or raise the budget.")


#: Largest number of float32 entries one context batch may hold (contexts × K × d): 2^31 (8 GiB).
MAX_BATCH_ENTRIES = 2**31


def footprint_bytes(n_labels: int, n_norm: int, n_eval: int, K: int, d: int) -> int:
    """Estimated peak memory of building a task: every context batch it samples (float32 candidates) and the
    float64 per-candidate arrays the judge keeps (ref log-probs, gold, proxy) — the whole footprint, not one batch."""
    return 4 * K * d * (n_labels + n_norm + n_eval) + 3 * 8 * K * (n_norm + n_eval)


def _check_budget_size(cfg: "TaskConfig") -> None:
    """The whole footprint of the task's context batches against 8 GiB (machine-independent; ``make_world`` also
    checks it against the memory available when it builds)."""
    from tiltenv._validation import MAX_FOOTPRINT_BYTES, check_footprint

    vals = (cfg.n_labels, cfg.n_norm_contexts, cfg.n_eval_contexts, cfg.K, cfg.d)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        return  # the field checks report the bad value itself
    check_footprint("the task's contexts", footprint_bytes(*vals), footprint_terms(cfg),
                    "lower n_labels, n_norm_contexts, n_eval_contexts, K or d", against_available=False)
    assert MAX_FOOTPRINT_BYTES == 4 * MAX_BATCH_ENTRIES


def footprint_terms(cfg: "TaskConfig") -> str:
    return (f"(n_labels {cfg.n_labels} + n_norm_contexts {cfg.n_norm_contexts} + n_eval_contexts {cfg.n_eval_contexts})"
            f" × K {cfg.K} × d {cfg.d} float32 candidates + float64 judge arrays")


def config_from_kwargs(kwargs: Mapping[str, Any], cls: type = TaskConfig):
    """Build a config from keyword arguments, rejecting unknown names with a close-match suggestion."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in kwargs:
        if key not in names:
            raise ParameterTypeError(f"unknown task parameter {key!r}." + suggest(key, names)
                                     + f" Valid parameters: {names}.")
    return cls(**kwargs)
