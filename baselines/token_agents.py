r"""The token baselines as built-in leaderboard entries (``token_reinforce``, ``token_rloo``, ``token_grpo``,
``token_ppo``, ``token_dpo``, ``token_best_of_n``) for the token tasks (``tiltenv/Tokens-v0``).

Each follows the agent protocol of :mod:`baselines.base` — ``fit(task, budget, checkpoint)`` — with one difference
of kind: its checkpoints are **sequence policies** (``V``, ``initial_state``, ``next_logits``, ``advance``: the
protocol of :mod:`tiltenv.worlds.tokens.model`), which the scorer enumerates over the prefix tree
(:mod:`leaderboard.sandbox.agent`), not ``(C, K)`` arrays over candidate vectors. So they apply to token tasks
only (``task_kinds = ("tokens",)``); on a bandit task the scorer stores the run as ``not_applicable``.

* ``token_reinforce`` / ``token_rloo`` / ``token_grpo`` / ``token_ppo`` — :class:`baselines.token_pg.TokenPG`
  with that algorithm (its config :class:`~baselines.token_pg.TokenPGConfig`, the algorithm preset); the
  checkpoints include the scorer's marks (``budget.checkpoint_marks()``).
* ``token_dpo`` — :class:`baselines.token_dpo.TokenDPO` on the task's token preference pairs (no proxy query:
  no trajectory on the board).
* ``token_best_of_n`` — best-of-n over π_ref responses ranked by the proxy, deployed **exactly**: for each prompt
  it is evaluated on, the policy scores that prompt's V^L responses with the proxy once (the scorer's deployment
  cache: exactly the candidates it is evaluated on) and follows the token conditionals of
  :func:`tiltenv.metrics.best_of_n_logp` (a :class:`~tiltenv.worlds.tokens.TablePolicy`). No training query.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

import torch

from baselines.base import config_dataclass
from baselines.token_dpo import TokenDPO, TokenDPOConfig
from baselines.token_pg import TokenPG, TokenPGConfig
from tiltenv._validation import check_float

__all__ = ["TOKEN_BASELINES", "TokenREINFORCE", "TokenRLOO", "TokenGRPO", "TokenPPO", "TokenDPOAgent", "TokenBestOfN",
           "TokenBestOfNConfig", "TokenBestOfNPolicy"]


def _check_task(task: Any, name: str) -> None:
    if not callable(getattr(task, "sample_prompts", None)):
        raise TypeError(f"{name} is a token-level agent: it needs a token task (tiltenv/Tokens-v0), got "
                        f"{type(task).__name__}.")


class _TokenPGAgent(TokenPG):
    name: ClassVar[str] = "token_pg"
    config_class: ClassVar[type] = TokenPGConfig
    task_kinds: ClassVar[tuple[str, ...]] = ("tokens",)

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config if config is not None else self.config_class(**kwargs))

    def fit(self, task: Any, budget: Any = 65_536, checkpoint: Any = None, **kwargs: Any) -> "_TokenPGAgent":
        _check_task(task, self.name)
        return super().fit(task, budget, checkpoint, **kwargs)


def _preset(algo: str) -> type:
    @config_dataclass
    class Config(TokenPGConfig):
        algorithm: str = field(default=algo, metadata={"help": "One of ('reinforce', 'rloo', 'grpo', 'ppo')."})

    Config.__name__ = Config.__qualname__ = f"Token{algo.upper()}Config"
    return Config


class TokenREINFORCE(_TokenPGAgent):
    name, config_class = "token_reinforce", _preset("reinforce")


class TokenRLOO(_TokenPGAgent):
    name, config_class = "token_rloo", _preset("rloo")


class TokenGRPO(_TokenPGAgent):
    name, config_class = "token_grpo", _preset("grpo")


class TokenPPO(_TokenPGAgent):
    name, config_class = "token_ppo", _preset("ppo")


class TokenDPOAgent(TokenDPO):
    """:class:`~baselines.token_dpo.TokenDPO` with the leaderboard's ``fit(task, budget, checkpoint)`` (the budget
    is unused: DPO scores nothing with the proxy)."""

    name: ClassVar[str] = "token_dpo"
    config_class: ClassVar[type] = TokenDPOConfig
    task_kinds: ClassVar[tuple[str, ...]] = ("tokens",)

    def fit(self, task: Any, budget: Any = None, checkpoint: Any = None) -> "TokenDPOAgent":
        _check_task(task, self.name)
        return super().fit(task, checkpoint)


@config_dataclass
class TokenBestOfNConfig:
    """Best-of-n over π_ref responses, deployed exactly (module docstring)."""

    n: float = field(default=16.0, metadata={"help": "Responses drawn from π_ref (real n ≥ 1: the exact law)."})

    def __post_init__(self) -> None:
        self.n = check_float("n", self.n, low=1.0)


class TokenBestOfNPolicy(torch.nn.Module):
    """The exact best-of-n law of a token task as a sequence policy. ``initial_state(prompts)`` scores the V^L
    responses of each prompt with the task's proxy (one query each) and builds their exact law; the state is
    that of a :class:`~tiltenv.worlds.tokens.TablePolicy` over those prompts."""

    def __init__(self, task: Any, n: float) -> None:
        super().__init__()
        self.task, self.n, self.V, self.L = task, float(n), int(task.V), int(task.L)
        self.table: Any = None

    def initial_state(self, prompts: torch.Tensor) -> torch.Tensor:
        from tiltenv import metrics as M
        from tiltenv.worlds.tokens import TablePolicy, tree_logp

        prompts = prompts.to(torch.int64)
        with torch.no_grad():
            proxy = self.task.proxy(self.task.featurizer.all_responses(prompts)).to(torch.float64)
            ref = tree_logp(self.task.ref_model, prompts, self.L)
        self.table = TablePolicy(prompts, M.best_of_n_logp(ref, proxy, self.n), self.V, self.L)
        return self.table.initial_state(prompts)

    def next_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.table.next_logits(state)

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.table.advance(state, tokens)


class TokenBestOfN:
    """Best-of-n on a token task (no training; its policy is :class:`TokenBestOfNPolicy`)."""

    name: ClassVar[str] = "token_best_of_n"
    config_class: ClassVar[type] = TokenBestOfNConfig
    task_kinds: ClassVar[tuple[str, ...]] = ("tokens",)

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        self.config = config if config is not None else TokenBestOfNConfig(**kwargs)
        self.model: Any = None

    def fit(self, task: Any, budget: Any = None, checkpoint: Any = None) -> "TokenBestOfN":
        _check_task(task, self.name)
        self.model = TokenBestOfNPolicy(task, self.config.n)
        if checkpoint is not None:
            checkpoint(0, self.model)
        return self


#: name -> (agent class, config class) of the token-level built-in entries (apply to token tasks only).
TOKEN_BASELINES: dict[str, tuple[type, type]] = {
    cls.name: (cls, cls.config_class)
    for cls in (TokenREINFORCE, TokenRLOO, TokenGRPO, TokenPPO, TokenDPOAgent, TokenBestOfN)
}
