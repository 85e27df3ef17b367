"""The autoregressive models and the public features of a token task.

* :class:`ARModel` — a tiny GRU language model: it reads the prompt, then gives the next-token logits of the
  response. π_ref is one drawn from the task seed (:meth:`ARModel.draw`); a trainable policy is a copy of it
  (:meth:`ARModel.copy_trainable`), so step 0 of any training is π_ref exactly.
* The **sequence-policy protocol** every tiltenv token function accepts (tree enumeration, sampling, scoring):
  ``V`` (vocabulary size), ``initial_state(prompts (N, P) int64) -> state``, ``next_logits(state) -> (N, V)``
  and ``advance(state, tokens (N,)) -> state``, where a state is one tensor with the batch first.
  :class:`PrefixPolicy` turns a stateless ``fn(prompts, prefix) -> (N, V) logits`` into one.
* :class:`Featurizer` — φ(c, y) ∈ R^d from fixed, public token and position embeddings (module docstring of
  :mod:`tiltenv.worlds.tokens`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

__all__ = ["ARModel", "PrefixPolicy", "Featurizer", "check_sequence_policy", "all_responses"]


def all_responses(V: int, L: int) -> torch.Tensor:
    """Every response in enumeration order: (V^L, L) int64."""
    grids = torch.meshgrid(*[torch.arange(V)] * L, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1)


class ARModel(torch.nn.Module):
    """A GRU over prompt then response tokens: ``π(y_t | c, y_<t) = softmax(sharpness · head(h_t))``.

    ``sharpness`` (a buffer) scales the logits: 0 gives the uniform policy, larger values lower entropy.
    """

    def __init__(self, V: int, hidden: int, sharpness: float = 1.0) -> None:
        super().__init__()
        self.V, self.hidden = int(V), int(hidden)
        self.embed = torch.nn.Embedding(self.V, self.hidden)
        self.cell = torch.nn.GRUCell(self.hidden, self.hidden)
        self.head = torch.nn.Linear(self.hidden, self.V)
        self.register_buffer("sharpness", torch.tensor(float(sharpness)))

    @classmethod
    def draw(cls, V: int, hidden: int, sharpness: float, seed: int) -> "ARModel":
        """A model with every parameter drawn from ``seed`` (float32, frozen, eval mode)."""
        model = cls(V, hidden, sharpness)
        g = torch.Generator().manual_seed(int(seed))
        scale = 1.0 / math.sqrt(hidden)
        with torch.no_grad():
            model.embed.weight.copy_(torch.randn(model.embed.weight.shape, generator=g))
            for p in (model.cell.weight_ih, model.cell.weight_hh):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            for p in (model.cell.bias_ih, model.cell.bias_hh):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g) * 2.0 * scale)
            model.head.bias.copy_(torch.randn(model.head.bias.shape, generator=g) * 0.5)
        return model.requires_grad_(False).eval()

    def copy_trainable(self) -> "ARModel":
        """A deep copy whose parameters require grad (a policy initialized at this model)."""
        return copy.deepcopy(self).requires_grad_(True).train()

    def initial_state(self, prompts: torch.Tensor) -> torch.Tensor:
        p = self.embed.weight
        h = torch.zeros(prompts.shape[0], self.hidden, dtype=p.dtype, device=p.device)
        for j in range(prompts.shape[1]):
            h = self.cell(self.embed(prompts[:, j]), h)
        return h

    def next_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.sharpness.to(state.dtype) * self.head(state)

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.cell(self.embed(tokens), state)


class PrefixPolicy(torch.nn.Module):
    """The sequence-policy protocol for a stateless ``fn(prompts (N, P), prefix (N, l)) -> (N, V) logits``
    (e.g. a transformer that re-reads the prefix): the state is the prompt and prefix tokens side by side."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], V: int, prompt_len: int) -> None:
        super().__init__()
        self.fn, self.V, self.prompt_len = fn, int(V), int(prompt_len)

    def initial_state(self, prompts: torch.Tensor) -> torch.Tensor:
        return prompts.to(torch.int64)

    def next_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.fn(state[:, : self.prompt_len], state[:, self.prompt_len:])

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([state, tokens.to(torch.int64)[:, None]], 1)


def check_sequence_policy(policy: object, V: int) -> None:
    """Raise a one-line error unless ``policy`` follows the sequence-policy protocol with vocabulary ``V``."""
    missing = [m for m in ("initial_state", "next_logits", "advance") if not callable(getattr(policy, m, None))]
    if missing:
        raise TypeError(f"a token policy needs methods initial_state, next_logits and advance (the sequence-policy "
                        f"protocol of tiltenv.worlds.tokens; {type(policy).__name__} lacks {missing}); wrap a function "
                        "fn(prompts, prefix) -> logits in tiltenv.worlds.tokens.PrefixPolicy.")
    v = getattr(policy, "V", None)
    if v is not None and int(v) != V:
        raise ValueError(f"the policy's vocabulary V={v} differs from the task's V={V}.")


class Featurizer(torch.nn.Module):
    """φ(c, y) = √d · u / ‖u‖ with ``u = √ρ e(c) + √(1-ρ) s(y)`` (public, fixed).

    * ``e(c) = Σ_j (tok[c_j] + pos[j]) / √(2P)`` — the prompt's mean token-plus-position embedding (P tokens);
    * ``s(y) = Σ_t tanh(M [h_t; h_{t-1}]) / √L / rms`` with ``h_t = (tok[y_t] + pos[P+t]) / √2`` (``h_{-1} = 0``):
      position-aware token and bigram terms through a fixed random mixing ``M``, centred and whitened over all
      V^L responses (uniformly weighted; directions the responses do not span are dropped).

    ``tok`` (V, d), ``pos`` (P+L, d) ~ N(0, I), ``M`` (d, 2d) ~ N(0, 1/(2d)). With θ* a unit vector, <θ*, φ> has
    about unit variance over prompts and responses (√(1-ρ) of it within a prompt), the scale every link is
    normalized for.
    """

    def __init__(self, V: int, L: int, prompt_len: int, d: int, prompt_weight: float, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.V, self.L, self.prompt_len, self.d = V, L, prompt_len, d
        self.rho = float(prompt_weight)
        self.register_buffer("tok", torch.randn((V, d), generator=g, dtype=torch.float64))
        self.register_buffer("pos", torch.randn((prompt_len + L, d), generator=g, dtype=torch.float64))
        self.register_buffer("mix", torch.randn((d, 2 * d), generator=g, dtype=torch.float64) / math.sqrt(2 * d))
        raw = self._response_raw(all_responses(V, L))
        # whiten s over the V^L responses (uniform): mean 0, identity covariance on its span, so that with
        # e(c) ~ N(0, I) the index <θ*, φ> spreads about as N(0, 1), the scale the links are normalized for
        mean = raw.mean(0)
        evals, evecs = torch.linalg.eigh((raw - mean).T @ (raw - mean) / raw.shape[0])
        keep = evals > 1e-9 * evals.max()
        scale = torch.where(keep, evals.clamp_min(1e-300).rsqrt(), torch.zeros_like(evals))
        self.register_buffer("s_mean", mean)
        self.register_buffer("s_whiten", evecs @ torch.diag(scale) @ evecs.T)
        self._table: torch.Tensor | None = None

    def _response_raw(self, responses: torch.Tensor) -> torch.Tensor:
        h = (self.tok[responses] + self.pos[self.prompt_len:]) / math.sqrt(2)  # (N, L, d)
        prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        return torch.tanh(torch.cat([h, prev], -1) @ self.mix.T).sum(1) / math.sqrt(self.L)

    def prompt_embedding(self, prompts: torch.Tensor) -> torch.Tensor:
        """(N, P) int64 -> (N, d) float64."""
        return (self.tok[prompts] + self.pos[: self.prompt_len]).sum(1) / math.sqrt(2 * self.prompt_len)

    def response_embedding(self, responses: torch.Tensor) -> torch.Tensor:
        """(N, L) int64 -> (N, d) float64 s(y)."""
        return (self._response_raw(responses) - self.s_mean) @ self.s_whiten

    def response_table(self) -> torch.Tensor:
        """s(y) of all V^L responses in enumeration order, (K, d) float64 (cached)."""
        if self._table is None:
            self._table = self.response_embedding(all_responses(self.V, self.L))
        return self._table

    def _combine(self, e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        u = math.sqrt(self.rho) * e + math.sqrt(1.0 - self.rho) * s
        return (math.sqrt(self.d) * u / u.norm(dim=-1, keepdim=True)).to(torch.float32)

    def forward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """φ of each (prompt, response) pair: (N, P), (N, L) -> (N, d) float32."""
        return self._combine(self.prompt_embedding(prompts), self.response_embedding(responses))

    def all_responses(self, prompts: torch.Tensor) -> torch.Tensor:
        """φ of every response of each prompt: (C, P) -> (C, K, d) float32 (the bandit view's candidates)."""
        return self._combine(self.prompt_embedding(prompts)[:, None, :], self.response_table()[None])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_table"] = None
        return state
