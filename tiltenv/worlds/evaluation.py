"""Exact gold evaluation of any policy against the judge (the hidden-metrics hook, bsuite style).

``evaluate(policy, target)`` scores a policy on the judge's held-out evaluation contexts, exactly: every
metric is a sum over the K candidates of each context (no sampling of actions), averaged over contexts.

``policy`` may be
  * a tensor/array (C, K) of log-probabilities over the judge's evaluation contexts;
  * a callable ``f(candidates (C, K, d), ref_logp (C, K)) -> (C, K)`` log-probabilities;
  * an agent with a ``policy(candidates, ref_logp)`` method (the leaderboard protocol);
  * a stable-baselines3 model (its action distribution is read exactly, not sampled);
  * on a token task (``tiltenv/Tokens-v0``), a **sequence policy** (``V``, ``initial_state``, ``next_logits``,
    ``advance``: :mod:`tiltenv.worlds.tokens.model`; or an object with ``next_logp(prompts, prefix)``), enumerated
    exactly over all V^L responses of each evaluation prompt (:func:`tiltenv.worlds.tokens.tree_logp`). A sequence
    policy on a bandit task, or with another vocabulary size, is a one-line error.

The output is always **normalized log-probabilities** (``-inf`` = probability 0). evaluate never guesses:
probabilities, scaled probabilities, logits or float16 are errors that say what was returned and how to fix
it; pass ``logits=True`` to declare unnormalized scores.

``target`` is an env made by ``gym.make("tiltenv/...")`` (any wrappers), a vector env, a config, a
:class:`~tiltenv.worlds.world.World` or a :class:`~tiltenv.worlds.world.Judge`.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> env = gym.make("tiltenv/SingleIndex-v0", d=4, K=8, n_labels=200, n_eval_contexts=256)
    >>> m = tiltenv.evaluate(lambda cand, ref_logp: ref_logp, env)   # π_ref itself
    >>> round(m["kl"], 12), round(m["normalized_score"], 12)
    (0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tiltenv import metrics as M
from tiltenv.worlds.config import TabularConfig, TaskConfig
from tiltenv.worlds.scoring import EvalResult, _as_logp, _sb3_logp, evaluate_on_judge, metrics_of_logp, policy_logp  # noqa: F401
from tiltenv.worlds.world import Judge, World, is_task_config, make_world

__all__ = ["evaluate", "EvalResult", "evaluate_on_judge", "resolve_judge", "policy_logp", "metrics_of_logp",
           "tilt_sweep", "best_of_n_sweep", "gold_range", "overoptimization_tol", "overoptimization_report"]


def resolve_judge(target: Any):
    """Find the judge of an env / vector env / config / world / judge."""
    if isinstance(target, Judge):
        return target
    if isinstance(target, World):
        return target.judge
    if is_task_config(target):
        return make_world(target).judge
    env = _tiltenv_env(target)
    config = getattr(env, "config", None)
    if is_task_config(config):
        return make_world(config).judge
    raise TypeError(
        f"cannot find a tiltenv task in {type(target).__name__}; pass an env made by gym.make('tiltenv/...'), "
        "a vector env, a TaskConfig/TabularConfig, a World or a Judge."
    )


def _tiltenv_env(target: Any) -> Any:
    """The tiltenv env inside Gymnasium wrappers, ``SB3VecEnv`` or SB3's ``DummyVecEnv``/``VecEnvWrapper``s."""
    for _ in range(16):
        if hasattr(target, "venv"):  # SB3VecEnv, SB3 VecEnvWrapper (VecNormalize, VecMonitor, ...)
            target = target.venv
        elif hasattr(target, "envs") and len(getattr(target, "envs", ())) > 0:  # SB3 DummyVecEnv
            target = target.envs[0]
        else:
            break
    return getattr(target, "unwrapped", target)


def evaluate(policy: Any, target: Any, *, beta: float | None = None, logits: bool = False) -> EvalResult:
    """Exact gold metrics of ``policy`` on the judge's held-out contexts.

    Args:
        policy: see the module docstring. Its output must be normalized log-probabilities; anything else
            (probabilities, logits, float16) is an error that says how to fix it.
        target: env, vector env, config, World or Judge.
        beta: KL coefficient of J_β (default: the task's ``beta``).
        logits: the policy returns unnormalized scores: normalize them with ``log_softmax`` (explicit, never guessed).

    Returns:
        :class:`EvalResult`, a dict with ``gold_value``, ``proxy_value``, ``ref_gold_value``, ``max_gold_value``,
        ``kl``, ``chi2``, ``objective`` (J_β), ``optimal_objective`` (J*_β), ``value_gap`` (J*_β − J_β),
        ``normalized_score``, ``kl_matched_gap``, ``reward_variance_ref`` / ``reward_variance_policy`` (proxy
        variance per context, averaged), ``proxy_gold_corr`` (under π_ref), ``beta``; ``print(result)`` shows a
        table with each metric's meaning (formulas: docs/metrics.md). Pairwise ranking diagnostics (O(K²) per
        context) live in :mod:`tiltenv.lifecycle.diagnostics`.
    """
    judge = resolve_judge(target)
    seq = _sequence_policy(policy)
    if seq is not None:
        return _evaluate_sequence(seq, policy, judge, beta)
    return evaluate_on_judge(policy, judge, beta=beta, logits=logits)


def _sequence_policy(policy: Any) -> Any:
    """A token-level policy (the sequence-policy protocol of :mod:`tiltenv.worlds.tokens.model`, or an object with
    ``next_logp(prompts, prefix)``), else None."""
    if all(callable(getattr(policy, m, None)) for m in ("initial_state", "next_logits", "advance")):
        return policy
    if callable(getattr(policy, "next_logp", None)) and not callable(getattr(policy, "policy", None)):
        return policy
    return None


def _evaluate_sequence(seq: Any, policy: Any, judge: Any, beta: float | None) -> EvalResult:
    """Exact metrics of a token-level policy on a token task's judge: all V^L responses of each evaluation prompt,
    enumerated over the prefix tree (:func:`tiltenv.worlds.tokens.tree_logp`)."""
    if not hasattr(judge, "eval_prompts"):
        raise TypeError(f"{type(policy).__name__} is a token-level (sequence) policy, which applies to token tasks "
                        "(tiltenv/Tokens-v0) only; this task is a bandit over K candidate vectors: pass (C, K) "
                        "log-probabilities, a function f(candidates, ref_logp) or an agent with policy(candidates, ref_logp).")
    from tiltenv.worlds.tokens import PrefixPolicy, check_sequence_policy

    if not callable(getattr(seq, "next_logits", None)):  # next_logp(prompts, prefix): normalized log-probabilities
        v = getattr(seq, "V", judge.V)
        seq = PrefixPolicy(seq.next_logp, int(v), judge.eval_prompts.shape[1])
    check_sequence_policy(seq, int(judge.V))
    return metrics_of_logp(judge.policy_logp(seq), judge, beta=beta)


def gold_range(judge: Any) -> float:
    """``E_x max_k r*(x_k) − V*(π_ref)``: how much gold there is to gain on the task (the scale of every drop)."""
    ref, gold = judge.eval_ref_logp, judge.eval_gold
    return M.soft_value(ref, gold, 0.0) - M.policy_value(ref, gold)


def overoptimization_tol(judge: Any) -> float:
    """The drop that counts as overoptimization on this task: ``OVEROPTIMIZATION_REL_TOL × gold_range(judge)``
    (:data:`tiltenv.glossary.OVEROPTIMIZATION_RULE`; the one rule of the library, the scripts and the leaderboard)."""
    from tiltenv.glossary import OVEROPTIMIZATION_REL_TOL

    return OVEROPTIMIZATION_REL_TOL * max(gold_range(judge), 0.0)


def overoptimization_report(rows: Sequence[dict], judge: Any):
    """:func:`tiltenv.metrics.overoptimization` of rows with ``kl``/``gold_value``/``proxy_value``, with the
    drop threshold relative to the task's gold range (:func:`overoptimization_tol`)."""
    tol = overoptimization_tol(judge)
    return M.overoptimization([r["kl"] for r in rows], [r["gold_value"] for r in rows],
                              [r["proxy_value"] for r in rows], tol=tol)


def tilt_sweep(target: Any, betas: Sequence[float], *, reward: str = "proxy") -> list[dict[str, float]]:
    """Metrics of the closed-form tilt ``π ∝ π_ref e^{r/β}`` for each β (``reward``: ``proxy`` or ``gold``).

    The proxy tilt is gold-blind: it is what an agent that fully optimizes the proxy at KL coefficient β
    deploys. Rows are ordered as ``betas``; each row has the :func:`evaluate` metrics plus ``tilt_beta``.
    """
    judge = resolve_judge(target)
    r = {"proxy": judge.eval_proxy, "gold": judge.eval_gold}.get(reward)
    if r is None:
        raise ValueError(f"reward must be 'proxy' or 'gold' (got {reward!r}).")
    rows = []
    for b in betas:
        logp = M.tilt_logp(judge.eval_ref_logp, r, float(b))
        rows.append({"tilt_beta": float(b), **metrics_of_logp(logp, judge)})
    return rows


def best_of_n_sweep(target: Any, ns: Sequence[int]) -> list[dict[str, float]]:
    """Metrics of exact best-of-n on the proxy (n draws from π_ref, keep the best by proxy) for each n."""
    judge = resolve_judge(target)
    rows = []
    for n in ns:
        logp = M.best_of_n_logp(judge.eval_ref_logp, judge.eval_proxy, n)
        rows.append({"n": int(n) if float(n).is_integer() else float(n), **metrics_of_logp(logp, judge)})
    return rows
