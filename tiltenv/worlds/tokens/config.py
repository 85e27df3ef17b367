"""The configuration of a token-sequence task (``tiltenv/Tokens-v0``): every field is a ``gym.make`` kwarg."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


from tiltenv._cost import check_proxy_cost
from tiltenv._streams import token_seed_streams
from tiltenv._validation import check_choice, check_float, check_int
from tiltenv.worlds.config import ConfigMethods, GoldMemberMethods, check_gold_family, frozen_proxy_kwargs
from tiltenv.rewards.links import LINKS
from tiltenv.worlds.tokens.reward_model import parse_token_proxy

__all__ = ["TokenConfig", "MAX_RESPONSES"]

#: Largest number of responses V^L a task may enumerate (exact metrics hold C × V^L float64 arrays).
MAX_RESPONSES = 2**20


@dataclass(frozen=True)
class TokenConfig(GoldMemberMethods, ConfigMethods):
    """A token-sequence task: prompt c of ``prompt_len`` tokens, response y of ``L`` tokens over ``V`` tokens.

    π_ref is a GRU drawn from the seed (width ``ref_hidden``; ``ref_sharpness`` scales its logits: 0 is uniform,
    larger is lower entropy). Features φ(c, y) ∈ R^d come from fixed public token and position embeddings
    (:class:`tiltenv.worlds.tokens.model.Featurizer`), normalized to norm √d; gold ``r*(c, y) = gold_scale · σ*(<θ*, φ>)``.
    All ``V^L`` responses of a prompt are enumerated, so every metric is exact with ``K = V^L``.
    """

    V: int = field(default=8, metadata={"help": "Vocabulary size (tokens 0..V-1)."})
    L: int = field(default=4, metadata={"help": "Response length in tokens (episode length)."})
    prompt_len: int = field(default=4, metadata={"help": "Prompt length in tokens (prompts uniform over V^prompt_len)."})
    d: int = field(default=16, metadata={"help": "Feature dimension of φ(c, y)."})
    prompt_weight: float = field(default=0.5, metadata={"help": "ρ ∈ [0, 1): share of the prompt in φ "
                                                                "(φ_raw = √ρ e(c) + √(1-ρ) s(y))."})
    ref_hidden: int = field(default=32, metadata={"help": "Hidden width of the π_ref GRU."})
    ref_sharpness: float = field(default=1.0, metadata={"help": "Logit scale of π_ref (0: uniform; its entropy falls "
                                                                "as it grows); ≥ 0."})
    link: str = field(default="relu", metadata={"help": f"Gold link σ*, one of {sorted(LINKS)}."})
    gold_scale: float = field(default=1.0, metadata={"help": "a in r* = a σ*(<θ*, φ>); > 0."})
    n_labels: int = field(default=2000, metadata={"help": "Preference pairs (two π_ref responses to one prompt each)."})
    label_temp: float = field(default=0.0, metadata={"help": "τ of the Bradley–Terry labeler; 0 = deterministic."})
    flip_rate: float = field(default=0.0, metadata={"help": "Symmetric label flip probability ε ∈ [0, 0.5)."})
    proxy: str = field(default="linear", metadata={"help": "Proxy kind: one over φ (tiltenv.rewards.proxies.PROXIES) or "
                                                           "'transformer', a reward model over the tokens "
                                                           "(tiltenv.worlds.tokens.reward_model)."})
    proxy_kwargs: Any = field(default=(), metadata={"help": "Keyword arguments of the proxy (a mapping)."})
    beta: float = field(default=0.25, metadata={"help": "KL coefficient β of the scored objective J_β; > 0."})
    n_eval_contexts: int = field(default=128, metadata={"help": "Held-out prompts the judge scores on (exactly)."})
    n_norm_contexts: int = field(default=128, metadata={"help": "Prompts the proxy is normalized on (exactly, "
                                                               "over all V^L responses)."})
    seed: int | None = field(default=0, metadata={"help": "Task seed; None in a public view (hidden)."})
    gold_family: bool = field(
        default=False,
        metadata={"help": "True (the leaderboard's test split): the link's shape, gold_scale, label_temp and flip_rate "
                          "are drawn per world from the family of `link` (tiltenv.rewards.families states the ranges; the "
                          "fields are its centre), so the member is hidden with the seed. False: exactly these values."},
    )

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("V", check_int("V", self.V, low=2, high=4096))
        set_("L", check_int("L", self.L, low=1, high=64))
        set_("prompt_len", check_int("prompt_len", self.prompt_len, low=1, high=256))
        if self.V**self.L > MAX_RESPONSES:
            raise ValueError(f"V^L = {self.V}^{self.L} = {self.V**self.L} responses is more than the {MAX_RESPONSES} "
                             "a task may enumerate; lower V or L.")
        set_("d", check_int("d", self.d, low=1, high=4096))
        set_("prompt_weight", check_float("prompt_weight", self.prompt_weight, low=0.0, high=1.0, high_open=True))
        set_("ref_hidden", check_int("ref_hidden", self.ref_hidden, low=1, high=4096))
        set_("ref_sharpness", check_float("ref_sharpness", self.ref_sharpness, low=0.0))
        check_choice("link", self.link, sorted(LINKS))
        set_("gold_scale", check_float("gold_scale", self.gold_scale, low=0.0, low_open=True))
        set_("n_labels", check_int("n_labels", self.n_labels, low=1))
        set_("label_temp", check_float("label_temp", self.label_temp, low=0.0))
        set_("flip_rate", check_float("flip_rate", self.flip_rate, low=0.0, high=0.5, high_open=True))
        set_("proxy_kwargs", frozen_proxy_kwargs(self.proxy, self.proxy_kwargs))
        set_("beta", check_float("beta", self.beta, low=0.0, low_open=True))
        set_("n_eval_contexts", check_int("n_eval_contexts", self.n_eval_contexts, low=1))
        set_("n_norm_contexts", check_int("n_norm_contexts", self.n_norm_contexts, low=2))
        if self.seed is not None:
            set_("seed", check_int("seed", self.seed, low=0, high=2**63 - 1))
        check_gold_family(self, (self.link,))
        check_proxy_cost(self.proxy, parse_token_proxy(self.proxy, dict(self.proxy_kwargs)), d=self.d,
                         n_labels=self.n_labels, label_kind="pairwise", seq_len=self.prompt_len + self.L)

    @property
    def K(self) -> int:
        """Responses per prompt: V^L."""
        return self.V**self.L

    @property
    def proxy_options(self) -> dict[str, Any]:
        return dict(self.proxy_kwargs)

    _seed_streams = staticmethod(token_seed_streams)  # the member is drawn from the token world's family stream

    def public(self) -> "TokenConfig":
        """What an agent may know: everything but the seed. With ``gold_family`` the member (link shape, gold scale,
        labeler τ and ε) is drawn from the seed, so every member has the same public view (the family's centre)."""
        return dataclasses.replace(self, seed=None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["proxy_kwargs"] = dict(self.proxy_kwargs)
        if not self.gold_family:  # absent when False: dev configs keep their digests (cache and result keys)
            out.pop("gold_family")
        return out
