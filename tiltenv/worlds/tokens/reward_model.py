"""A sequence-native reward model: a small causal transformer over tokens (``TokenConfig(proxy="transformer")``).

The φ proxies of :data:`tiltenv.rewards.proxies.PROXIES` see a response only through the public features φ(c, y). This
kind reads the tokens themselves, as a language-model reward model does: the prompt's tokens then the
response's, token + position embeddings, ``n_layers`` pre-LayerNorm causal self-attention blocks (``n_heads``
heads, width ``d_model``, a GELU feed-forward of width ``d_ff``) and a linear read-out of the last token's state
(the usual "reward head on the final token"). It is trained with the Bradley–Terry loss
``-log σ(r(c, a) − r(c, b))`` (TRL's reward-trainer loss; soft labels allowed) on ``task.token_preferences`` —
the same pairs and labels the φ proxies get — by AdamW on minibatches, on one CPU thread, its initialization and
minibatch order drawn from the token world's own ``sequence_proxy`` stream (appended: every other stream, and so
every existing token world, is unchanged). It is cached on disk like the other trained kinds
(:mod:`tiltenv.rewards.proxy_cache`; the key holds every config field but the judge's sizes and β, and every option).

Scoring: ``score_tokens(prompts, responses)`` (what ``task.reward`` and the env call) runs the sequences through
the causal mask; ``score_all(prompts, L)`` scores all V^L responses of each prompt level by level over the prefix
tree with the keys and values of each prefix cached (``Σ_l V^l`` token evaluations a prompt instead of
``(P + L) V^L``) — the two agree to float32 rounding (tested). It is centred and scaled under π_ref exactly like
the other kinds (over all V^L responses of the normalization prompts). It has no φ form: ``proxy(x)`` on
features raises, so the bandit view of a token task (``task.proxy_reward`` on features) is not available with it.

Valid only on token tasks: a bandit config asking for it gets one line naming its valid kinds
(:data:`tiltenv.rewards.proxy_base.SEQUENCE_PROXY_KINDS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from tiltenv._validation import check_float, check_footprint, check_int, suggest
from tiltenv.rewards.proxy_base import PROXIES, Proxy, ProxySpec, parse_options
from tiltenv.rewards.reward_models import _child_seeds, _generator, _init_linear, single_threaded

__all__ = ["TransformerOptions", "TransformerProxy", "SEQUENCE_PROXIES", "token_proxy_kinds", "parse_token_proxy",
           "transformer_spec", "train_transformer", "is_sequence_proxy"]

#: Bytes one chunk of prompts may hold while the tree is expanded (the level's states and key/value caches).
SCORE_CHUNK_BYTES = 64 * 2**20
#: Sequences per chunk when scoring given (prompt, response) pairs.
_ROWS = 1 << 14


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _n(option: str) -> str:
    return f"proxy_kwargs[{option!r}]"


@dataclass(frozen=True)
class TransformerOptions:
    """Options of the ``transformer`` token reward model."""

    d_model: int = _opt(32, "Width of the token/position embeddings and the residual stream.")
    n_layers: int = _opt(1, "Causal self-attention blocks.")
    n_heads: int = _opt(2, "Attention heads (divides d_model).")
    d_ff: int = _opt(64, "Width of each block's feed-forward layer.")
    epochs: int = _opt(20, "Passes over the preference pairs.")
    batch_size: int = _opt(256, "Pairs per AdamW step; 0 = full batch.")
    lr: float = _opt(5e-3, "AdamW learning rate.")
    weight_decay: float = _opt(1e-2, "AdamW decoupled weight decay.")

    def __post_init__(self) -> None:
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        s("d_model", check_int(_n("d_model"), self.d_model, low=2, high=1024))
        s("n_layers", check_int(_n("n_layers"), self.n_layers, low=1, high=8))
        s("n_heads", check_int(_n("n_heads"), self.n_heads, low=1, high=self.d_model))
        if self.d_model % self.n_heads:
            raise ValueError(f"proxy_kwargs['n_heads']={self.n_heads} must divide proxy_kwargs['d_model']="
                             f"{self.d_model}; valid: {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}.")
        s("d_ff", check_int(_n("d_ff"), self.d_ff, low=1, high=8192))
        s("epochs", check_int(_n("epochs"), self.epochs, low=1))
        s("batch_size", check_int(_n("batch_size"), self.batch_size, low=0))
        s("lr", check_float(_n("lr"), self.lr, low=0.0, low_open=True))
        s("weight_decay", check_float(_n("weight_decay"), self.weight_decay, low=0.0))


#: Token-only proxy kinds: name -> (options class, description). Their specs are made per world
#: (:func:`transformer_spec`): the architecture depends on V, P and L.
SEQUENCE_PROXIES: dict[str, tuple[type, str]] = {
    "transformer": (TransformerOptions, "A small causal transformer over prompt and response tokens, trained with "
                                        "the Bradley–Terry loss on the token pairs (a sequence-native reward model)."),
}


def token_proxy_kinds() -> list[str]:
    """Every proxy kind a token task takes: the φ kinds and the sequence-native ones."""
    return sorted(set(PROXIES) | set(SEQUENCE_PROXIES))


def parse_token_proxy(name: str, kwargs: dict[str, Any]) -> Any:
    """A token task's proxy kind and options, validated (one-line errors naming the valid kinds / options)."""
    if name in SEQUENCE_PROXIES:
        cls = SEQUENCE_PROXIES[name][0]
        valid = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in valid:
                raise TypeError(f"unknown option {key!r} for proxy {name!r}; valid options are {valid}."
                                + suggest(key, valid))
        return cls(**kwargs)
    if name not in PROXIES:
        kinds = token_proxy_kinds()
        raise ValueError(f"proxy must be one of {kinds} (got {name!r})." + suggest(str(name), kinds))
    return parse_options(name, kwargs)


def is_sequence_proxy(proxy: Any) -> bool:
    """Whether ``proxy`` scores token sequences (not φ features)."""
    return bool(getattr(proxy, "sequence_native", False))


class TransformerProxy(Proxy):
    """``r̂(c, y) = head(LN(h_{P+L}))``: a causal transformer over the prompt then the response tokens.

    Scores token sequences (:meth:`score_tokens`, :meth:`score_all`); ``proxy(x)`` on φ features raises."""

    kind = "transformer"
    sequence_native = True

    def __init__(self, opts: TransformerOptions, V: int, prompt_len: int, L: int) -> None:
        super().__init__()
        self.V, self.P, self.L = int(V), int(prompt_len), int(L)
        D, H = opts.d_model, opts.n_heads
        self.D, self.H, self.dh = D, H, D // H
        self.tok = torch.nn.Parameter(torch.zeros(V, D))
        self.pos = torch.nn.Parameter(torch.zeros(self.P + self.L, D))
        self.blocks = torch.nn.ModuleList()
        for _ in range(opts.n_layers):
            self.blocks.append(torch.nn.ModuleDict({
                "ln1": torch.nn.LayerNorm(D), "qkv": torch.nn.Linear(D, 3 * D), "out": torch.nn.Linear(D, D),
                "ln2": torch.nn.LayerNorm(D), "ff1": torch.nn.Linear(D, opts.d_ff), "ff2": torch.nn.Linear(opts.d_ff, D),
            }))
        self.ln_f = torch.nn.LayerNorm(D)
        self.head = torch.nn.Linear(D, 1)

    def init_parameters(self, g: torch.Generator) -> None:
        with torch.no_grad():
            self.tok.copy_(torch.randn(self.tok.shape, generator=g) * 0.5)
            self.pos.copy_(torch.randn(self.pos.shape, generator=g) * 0.5)
            for b in self.blocks:
                for name in ("qkv", "out", "ff1", "ff2"):
                    _init_linear(b[name], g)
            _init_linear(self.head, g)

    # ------------------------------------------------------------------ forward passes
    def _ff(self, b: Any, x: torch.Tensor) -> torch.Tensor:
        return b["ff2"](F.gelu(b["ff1"](b["ln2"](x))))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, H, T, dh)
        return t.reshape(*t.shape[:-1], self.H, self.dh).transpose(-3, -2)

    def sequence_raw(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw score of (N, T) token sequences (prompt then response; T = P + L), float32 (N,), differentiable."""
        T = tokens.shape[1]
        x = self.tok[tokens] + self.pos[:T]
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(self.D, -1)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
            att = torch.softmax(att.masked_fill(~mask, float("-inf")), -1)
            o = (att @ v).transpose(-3, -2).reshape(x.shape)
            x = x + b["out"](o)
            x = x + self._ff(b, x)
        return self.head(self.ln_f(x[:, -1])).squeeze(-1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("the 'transformer' proxy scores token sequences, not φ features: use task.reward(prompts, "
                         "responses) (the bandit view over φ is not available with a sequence-native proxy).")

    def _raw_cpu(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        seq = torch.cat([prompts.cpu(), responses.cpu()], 1).to(torch.int64)
        with torch.no_grad():
            out = [self.sequence_raw(seq[i:i + _ROWS]) for i in range(0, seq.shape[0], _ROWS)]
        return (torch.cat(out) if out else torch.empty(0)).to(torch.float64)

    def raw_tokens(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Raw score of each (prompt, response): (N, P), (N, L) -> (N,) float64 on the prompts' device (the
        model runs on the CPU)."""
        return self._raw_cpu(prompts, responses).to(prompts.device)

    def score_tokens(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """The normalized proxy reward of each (prompt, response): (N, P), (N, L) -> (N,) float64 on the prompts'
        device."""
        return ((self._raw_cpu(prompts, responses) - self.shift.cpu()) / self.scale.cpu()).to(prompts.device)

    def _prompt_pass(self, prompts: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values (c, H, P, dh) of every block over the prompt tokens."""
        P = prompts.shape[1]
        x = self.tok[prompts] + self.pos[:P]
        mask = torch.ones(P, P, dtype=torch.bool).tril()
        caches = []
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(self.D, -1)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)
            caches.append((k, v))
            att = torch.softmax(((q @ k.transpose(-1, -2)) / math.sqrt(self.dh)).masked_fill(~mask, float("-inf")), -1)
            x = x + b["out"]((att @ v).transpose(-3, -2).reshape(x.shape))
            x = x + self._ff(b, x)
        return caches

    def tree_bytes(self, L: int) -> int:
        """Peak bytes of :meth:`score_all` for one prompt (the last level's states and the caches it reads)."""
        V, D, T = self.V, self.D, self.P + L
        width = max(3 * D, self.blocks[0]["ff1"].out_features)
        return 4 * V**L * (6 * D + 2 * width + self.H * T) + 4 * V ** max(L - 1, 0) * T * D * 2 * len(self.blocks) * 2

    def raw_all(self, prompts: torch.Tensor, L: int | None = None) -> torch.Tensor:
        """Raw scores of all V^L responses of each prompt, (C, P) -> (C, V^L) float64, level by level over the
        prefix tree (each prefix's keys and values computed once; columns in :func:`~tiltenv.worlds.tokens.all_responses`
        order)."""
        L = self.L if L is None else int(L)
        V, H, dh, D = self.V, self.H, self.dh, self.D
        C = prompts.shape[0]
        check_footprint("scoring every response with the transformer proxy", 8 * C * V**L + self.tree_bytes(L),
                        f"C {C} prompts × V^L = {V}^{L} responses float64 + one prompt's tree", "score fewer prompts")
        chunk = max(1, SCORE_CHUNK_BYTES // self.tree_bytes(L))
        out = torch.empty((C, V**L), dtype=torch.float64)
        scale = 1.0 / math.sqrt(dh)
        with torch.no_grad():
            for s in range(0, C, chunk):
                p = prompts[s:s + chunk].to(torch.int64).cpu()
                c = p.shape[0]
                caches = self._prompt_pass(p)
                n = c  # prefixes at this level
                for level in range(L):
                    x = (self.tok + self.pos[self.P + level]).unsqueeze(0).expand(n, V, D).reshape(n * V, D)
                    new = []
                    for b, (kc, vc) in zip(self.blocks, caches):
                        q, k, v = b["qkv"](b["ln1"](x)).split(D, -1)
                        q, k, v = (t.reshape(n, V, H, dh) for t in (q, k, v))
                        parent = torch.einsum("nvhd,nhtd->nvht", q, kc) * scale  # (n, V, H, t)
                        own = (q * k).sum(-1, keepdim=True) * scale  # (n, V, H, 1)
                        att = torch.softmax(torch.cat([parent, own], -1), -1)
                        o = torch.einsum("nvht,nhtd->nvhd", att[..., :-1], vc) + att[..., -1:] * v
                        x = x + b["out"](o.reshape(n * V, D))
                        x = x + self._ff(b, x)
                        if level + 1 < L:
                            new.append((torch.cat([kc.repeat_interleave(V, 0), k.reshape(n * V, H, 1, dh)], 2),
                                        torch.cat([vc.repeat_interleave(V, 0), v.reshape(n * V, H, 1, dh)], 2)))
                    caches, n = new, n * V
                out[s:s + c] = self.head(self.ln_f(x)).squeeze(-1).reshape(c, V**L).to(torch.float64)
        return out

    def score_all(self, prompts: torch.Tensor, L: int | None = None) -> torch.Tensor:
        """The normalized proxy reward of all V^L responses of each prompt: (C, P) -> (C, V^L) float64."""
        return ((self.raw_all(prompts, L) - self.shift.cpu()) / self.scale.cpu()).to(prompts.device)


def train_transformer(model: TransformerProxy, token_prefs: dict[str, torch.Tensor], opts: TransformerOptions,
                      seed: int) -> TransformerProxy:
    """Bradley–Terry training on the token pairs (AdamW, one CPU thread); initialization and minibatch order
    from ``seed``. Returns the model with ``requires_grad`` off."""
    n = token_prefs["label"].shape[0]
    T = token_prefs["prompts"].shape[1] + token_prefs["a"].shape[1]
    bs = n if opts.batch_size == 0 or opts.batch_size >= n else opts.batch_size
    check_footprint("training the transformer proxy", 2 * bs * T * 4 * (8 * model.D + 2 * model.H * T
                    + 2 * model.blocks[0]["ff1"].out_features) * len(model.blocks),
                    f"2 × batch_size {bs} × (P + L) {T} sequences' float32 activations (autograd keeps them)",
                    "lower proxy_kwargs['batch_size'] (0 is the full batch of n_labels pairs)")
    init_seed, order_seed = _child_seeds(seed, 2)
    model.init_parameters(_generator(init_seed))
    prompts = token_prefs["prompts"].to(torch.int64)
    a = torch.cat([prompts, token_prefs["a"].to(torch.int64)], 1)
    b = torch.cat([prompts, token_prefs["b"].to(torch.int64)], 1)
    y = token_prefs["label"].to(torch.float32)
    g = _generator(order_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    model.train()
    with single_threaded(torch.device("cpu")), torch.enable_grad():
        for _ in range(opts.epochs):
            perm = torch.randperm(n, generator=g) if bs < n else None
            for s in range(0, n, bs):
                idx = slice(s, s + bs) if perm is None else perm[s:s + bs]
                r = model.sequence_raw(torch.cat([a[idx], b[idx]], 0))
                m = r.shape[0] // 2
                loss = F.binary_cross_entropy_with_logits(r[:m] - r[m:], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.requires_grad_(False).eval()


def transformer_spec(V: int, prompt_len: int, L: int, token_prefs: dict[str, torch.Tensor], seed: int) -> ProxySpec:
    """The ``transformer`` kind's spec for one token world (its skeleton knows V, P and L; its builder the world's
    token pairs and its ``sequence_proxy`` stream), for :func:`tiltenv.rewards.proxy_cache.build_proxy`."""

    def skeleton(opts: TransformerOptions, d: int) -> TransformerProxy:
        return TransformerProxy(opts, V, prompt_len, L)

    def build(opts: TransformerOptions, ctx: Any) -> TransformerProxy:
        return train_transformer(skeleton(opts, ctx.d), token_prefs, opts, seed)

    return ProxySpec("transformer", TransformerOptions, build, needs_labels=True,
                     description=SEQUENCE_PROXIES["transformer"][1], skeleton=skeleton)
