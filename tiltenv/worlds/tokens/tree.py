"""Exact enumeration of a sequence policy over all V^L responses, level by level over the prefix tree.

Response ``y = (y_1 … y_L)`` has index ``k = Σ_t y_t V^(L-t)`` (lexicographic: the first token is the most
significant digit), so row ``k`` of :func:`all_responses` and column ``k`` of :func:`tree_logp` agree.

:func:`tree_logp` evaluates the policy once per prefix: ``Σ_{l<L} V^l`` next-token distributions a prompt,
batched over every prefix of a level and over prompts, each level normalized by ``log_softmax`` in float64 — so
the V^L probabilities of a prompt sum to 1 to double precision whatever the model's dtype. Memory is checked
before allocating (:func:`tiltenv._validation.check_footprint`).
"""

from __future__ import annotations

from typing import Any

import torch

from tiltenv._validation import check_footprint
from tiltenv.worlds.tokens.model import all_responses, check_sequence_policy

__all__ = ["all_responses", "response_index", "tree_logp", "expand_tree", "token_logp", "sequence_logp", "sample_responses", "TablePolicy",
           "tree_footprint"]

#: Bytes one chunk of prompts may hold while expanding the tree (about; keeps temporaries in memory bounds).
CHUNK_BYTES = 64 * 2**20


def response_index(responses: torch.Tensor, V: int) -> torch.Tensor:
    """(N, L) tokens -> (N,) enumeration index."""
    L = responses.shape[-1]
    weights = V ** torch.arange(L - 1, -1, -1, device=responses.device)
    return (responses.to(torch.int64) * weights).sum(-1)


def tree_footprint(C: int, V: int, L: int) -> int:
    """Bytes of :func:`tree_logp`'s output, (C, V^L) float64."""
    return 8 * C * V**L


def tree_logp(policy: Any, prompts: torch.Tensor, L: int, *, chunk: int | None = None) -> torch.Tensor:
    """log π(y | c) of all V^L responses of every prompt: (C, P) -> (C, V^L) float64, on the prompts' device.

    Args:
        policy: a sequence policy (:mod:`tiltenv.worlds.tokens.model`), evaluated without gradients.
        prompts: (C, P) int64 prompt tokens.
        L: response length.
        chunk: prompts expanded at once (default: as many as fit :data:`CHUNK_BYTES`).
    Raises:
        ValueError: the (C, V^L) output would not fit in memory (checked before allocating).
    """
    V = int(policy.V)
    check_sequence_policy(policy, V)
    state: list[Any] = [None]

    def step(p: torch.Tensor, level: int, prefixes: torch.Tensor) -> torch.Tensor:
        # the prefixes of a level are those of the last one, each followed by 0..V-1: advance the kept state
        if level == 0:
            state[0] = policy.initial_state(p)
        else:
            state[0] = policy.advance(state[0].repeat_interleave(V, 0), prefixes[:, -1])
        return torch.log_softmax(policy.next_logits(state[0]).to(torch.float64), -1)

    with torch.no_grad():
        return expand_tree(step, prompts, V, L, chunk=chunk)


def expand_tree(step: Any, prompts: torch.Tensor, V: int, L: int, *, chunk: int | None = None,
                what: str = "tree_logp", out: torch.Tensor | None = None) -> torch.Tensor:
    """The prefix-tree expansion behind :func:`tree_logp`, for any source of next-token log-probabilities.

    ``step(p, level, prefixes)`` is called level by level (``level`` = 0 … L-1) for each chunk ``p`` (c, P) of
    the prompts, with ``prefixes`` (c·V^level, level) int64: every prefix of that length of each prompt of the
    chunk, prompt-major, prefixes in enumeration order (so row ``j`` of level ``l+1`` is row ``j // V`` of level
    ``l`` followed by token ``j % V``); it returns their (c·V^level, V) normalized float64 log-probabilities. The
    scorer's step asks a sandboxed run over its channel (:mod:`leaderboard.sandbox.agent`); :func:`tree_logp`'s
    keeps the policy's state. Memory is checked before the (C, V^L) float64 output is allocated (``out``: write
    into this (C, V^L) float64 tensor instead).
    """
    C, K = prompts.shape[0], V**L
    if out is None:
        check_footprint(what, tree_footprint(C, V, L) + CHUNK_BYTES,
                        f"C {C} prompts × V^L = {V}^{L} responses float64", "score fewer prompts at a time")
        out = torch.empty((C, K), dtype=torch.float64, device=prompts.device)
    elif tuple(out.shape) != (C, K) or out.dtype != torch.float64:
        raise ValueError(f"out must be a (C, V^L) = ({C}, {K}) float64 tensor (got {tuple(out.shape)} {out.dtype}).")
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (K * 32))
    for start in range(0, C, chunk):
        p = prompts[start:start + chunk]
        c = p.shape[0]
        logp = torch.zeros((c, 1), dtype=torch.float64, device=prompts.device)
        for level in range(L):
            n = c * V**level  # prefixes at this level
            prefixes = all_responses(V, level).to(prompts.device).repeat(c, 1) if level else \
                torch.zeros((c, 0), dtype=torch.int64, device=prompts.device)
            lp = step(p, level, prefixes)  # (n, V)
            logp = (logp.reshape(n, 1) + lp).reshape(c, V ** (level + 1))
        out[start:start + c] = logp
    return out


def token_logp(policy: Any, prompts: torch.Tensor, responses: torch.Tensor, *, state: Any = None) -> torch.Tensor:
    """Per-token log π(y_t | c, y_<t): (N, P), (N, L) -> (N, L) float64, differentiable in the policy.

    ``state``: the policy's state after each row's prompt, when the caller has it (e.g. one prompt's state
    repeated for its k responses: the prompt is read once instead of k times); ``prompts`` is then unused."""
    check_sequence_policy(policy, int(policy.V))
    if state is None:
        state = policy.initial_state(prompts)
    out = []
    for t in range(responses.shape[1]):
        lp = torch.log_softmax(policy.next_logits(state).to(torch.float64), -1)
        out.append(lp.gather(1, responses[:, t:t + 1]).squeeze(1))
        if t + 1 < responses.shape[1]:
            state = policy.advance(state, responses[:, t])
    return torch.stack(out, 1)


def sequence_logp(policy: Any, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """log π(y | c) of given full responses, one direct pass each: (N, P), (N, L) -> (N,) float64."""
    return token_logp(policy, prompts, responses).sum(1)


def sample_responses(policy: Any, prompts: torch.Tensor, L: int, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral samples, one response per prompt: (N, L) int64 tokens and (N,) float64 log π(y | c).

    Inverse-CDF sampling from one ``torch.rand`` draw per token (deterministic given the generator)."""
    V = int(policy.V)
    check_sequence_policy(policy, V)
    with torch.no_grad():
        state = policy.initial_state(prompts)
        toks, logp = [], torch.zeros(prompts.shape[0], dtype=torch.float64, device=prompts.device)
        for t in range(L):
            lp = torch.log_softmax(policy.next_logits(state).to(torch.float64), -1)
            u = torch.rand((prompts.shape[0], 1), generator=generator, dtype=torch.float64, device=prompts.device)
            y = torch.searchsorted(lp.exp().cumsum(-1), u).clamp_max(V - 1)
            logp = logp + lp.gather(1, y).squeeze(1)
            y = y.squeeze(1)
            toks.append(y)
            if t + 1 < L:
                state = policy.advance(state, y)
    return torch.stack(toks, 1), logp


class TablePolicy(torch.nn.Module):
    """A sequence policy given by a (C, V^L) table of log-probabilities over the responses of C known prompts
    (e.g. the gold tilt ``π*_β`` of the evaluation prompts): its next-token law is the table's conditional,
    ``π(v | c, y_<t) = Σ_{y ⊒ y_<t v} π(y|c) / Σ_{y ⊒ y_<t} π(y|c)``, so :func:`tree_logp` gives the table back.

    Any law over V^L responses factorizes this way: every response-level policy is an autoregressive one.
    The state is (row of the prompt, index of the prefix, its length).
    """

    def __init__(self, prompts: torch.Tensor, logp: torch.Tensor, V: int, L: int) -> None:
        super().__init__()
        if tuple(logp.shape) != (prompts.shape[0], V**L):
            raise ValueError(f"logp must have shape (C={prompts.shape[0]}, V^L={V**L}) (got {tuple(logp.shape)}).")
        self.V, self.L = int(V), int(L)
        self.prompts = prompts.to(torch.int64)
        lp = logp.to(torch.float64)
        self.marginals = [lp]  # marginals[L - l]: (C, V^l) log mass of each length-l prefix
        for _ in range(L):
            lp = torch.logsumexp(lp.reshape(lp.shape[0], -1, V), -1)
            self.marginals.append(lp)
        self.marginals.reverse()  # marginals[l]: (C, V^l)

    def initial_state(self, prompts: torch.Tensor) -> torch.Tensor:
        match = (prompts.to(torch.int64)[:, None, :] == self.prompts[None]).all(-1)
        found = match.any(1)
        if not bool(found.all()):
            raise ValueError(f"TablePolicy knows only its {self.prompts.shape[0]} prompts; got an unknown prompt "
                             f"{prompts[~found][0].tolist()}.")
        row = match.to(torch.int64).argmax(1)
        return torch.stack([row, torch.zeros_like(row), torch.zeros_like(row)], 1)

    def next_logits(self, state: torch.Tensor) -> torch.Tensor:
        row, prefix, level = state.unbind(1)
        out = torch.empty((state.shape[0], self.V), dtype=torch.float64)
        for lv in torch.unique(level).tolist():
            sel = level == lv
            nxt = self.marginals[lv + 1].reshape(self.prompts.shape[0], -1, self.V)
            cond = nxt[row[sel], prefix[sel]] - self.marginals[lv][row[sel], prefix[sel]][:, None]
            out[sel] = torch.where(torch.isnan(cond), 0.0, cond)  # a prefix of probability 0: any law (uniform)
        return out

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        row, prefix, level = state.unbind(1)
        return torch.stack([row, prefix * self.V + tokens.to(torch.int64), level + 1], 1)
