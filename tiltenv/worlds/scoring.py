"""Exact metrics of a policy on a judge's evaluation contexts: the scoring core under both the world and
:mod:`tiltenv.worlds.evaluation` (``Judge.evaluate`` and ``tiltenv.evaluate`` both end here).

``policy_logp`` turns any supported policy form into (C, K) log-probabilities; ``metrics_of_logp`` computes
every exact metric of them against a judge (any object with ``config``, ``eval_candidates``,
``eval_ref_logp``, ``eval_gold`` and ``eval_proxy``); ``evaluate_on_judge`` is the two together.
:mod:`tiltenv.worlds.evaluation` re-exports all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tiltenv import metrics as M
from tiltenv._validation import check_float
from tiltenv.observations import format_obs, observation_space

__all__ = ["policy_logp", "metrics_of_logp", "evaluate_on_judge", "EvalResult"]


def _sb3_logp(model: Any, candidates: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    from gymnasium import spaces

    C, K, d = candidates.shape
    obs_mode = "dict" if isinstance(model.observation_space, spaces.Dict) else "flat"
    expected = observation_space(K, d, obs_mode)
    if model.observation_space != expected:
        raise ValueError(
            f"the SB3 model was trained on observations {model.observation_space}, but this task's are "
            f"{expected} (K={K}, d={d}, obs_mode={obs_mode!r}): evaluate it on the task it was trained on."
        )
    obs = format_obs(candidates, ref_logp, obs_mode)
    obs_np = {k: v.cpu().numpy() for k, v in obs.items()} if isinstance(obs, dict) else obs.cpu().numpy()
    policy = model.policy
    with torch.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs_np)
        dist = policy.get_distribution(obs_t)
        if not hasattr(dist.distribution, "logits"):
            raise ValueError(f"the SB3 model's action distribution is {type(dist).__name__}, not categorical over the "
                             f"K={K} candidates: train it on a tiltenv env (action space Discrete(K)).")
        return torch.log_softmax(dist.distribution.logits.to(torch.float64), dim=-1).cpu()


def policy_logp(policy: Any, candidates: torch.Tensor, ref_logp: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
    """Turn any supported policy form into (C, K) float64 log-probabilities on ``candidates``.

    The protocol is **normalized log-probabilities** (``logsumexp`` of each row is 0; ``-inf`` means
    probability 0). Nothing else is guessed at: probabilities, scaled probabilities, logits and half-precision
    outputs raise an error that says what was returned and how to fix it. ``logits=True`` declares that the
    output is unnormalized scores, which are then normalized with ``log_softmax``.

    Raises:
        ValueError: wrong shape, NaN or +inf, a row with no finite entry, or rows that are not normalized
            log-probabilities (and ``logits`` is False).
        TypeError: an unsupported policy object.
    """
    C, K = ref_logp.shape
    if not isinstance(logits, bool):
        raise TypeError(f"logits must be True or False (got {logits!r}).")
    if hasattr(policy, "policy") and hasattr(policy, "observation_space") and hasattr(policy, "predict"):
        return _sb3_logp(policy, candidates, ref_logp)
    if callable(policy) or hasattr(policy, "policy"):
        fn = policy.policy if hasattr(policy, "policy") and not isinstance(policy, torch.nn.Module) else policy
        with torch.no_grad():
            return _as_logp(fn(candidates, ref_logp), C, K, logits=logits, what="the policy's output")
    if isinstance(policy, (np.ndarray, torch.Tensor, Sequence)):
        return _as_logp(policy, C, K, logits=logits, what="the policy array")
    raise TypeError(
        f"unsupported policy {type(policy).__name__}: pass a (C, K) array of log-probabilities, a callable "
        "(candidates, ref_logp) -> log-probs, an agent with .policy(), or an SB3 model."
    )


#: |logsumexp(row)| allowed for normalized log-probabilities, by dtype (float32 log_softmax rounds to ~1e-6·log K).
_LOGP_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def _as_logp(values: Any, C: int, K: int, *, logits: bool = False, what: str = "the policy output") -> torch.Tensor:
    """A (C, K) policy output -> float64 log-probabilities (see :func:`policy_logp` for the rule)."""
    fix = ("return log-probabilities (e.g. torch.log_softmax(scores, -1), or torch.log(p) for probabilities p), "
           "or pass logits=True to have unnormalized scores normalized")
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu()
    else:
        try:
            arr = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{what} must be a numeric (C={C}, K={K}) array of log-probabilities "
                             f"(got {type(values).__name__}).") from None
    if arr.dtype == torch.bool or arr.is_complex() or not (arr.is_floating_point() or arr.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{what} must be a real (C={C}, K={K}) array of log-probabilities (got dtype {arr.dtype}).")
    _check_shape(arr, C, K)
    dtype = arr.dtype
    if dtype in (torch.float16, torch.bfloat16) and not logits:
        raise ValueError(
            f"{what} is {str(dtype).replace('torch.', '')}: 16-bit floats cannot hold normalized log-probabilities "
            f"(rows are off by ~1e-3); return float32 or float64 (e.g. out.float()), or pass logits=True if these "
            "are unnormalized scores.")
    arr = arr.to(torch.float64)
    nan = torch.isnan(arr)
    if nan.any():
        r, k = (int(i) for i in nan.nonzero()[0])
        raise ValueError(f"{what} contains NaN ({int(nan.sum())} entries; first at row {r}, candidate {k}).")
    pos = torch.isposinf(arr)
    if pos.any():
        r, k = (int(i) for i in pos.nonzero()[0])
        raise ValueError(f"{what} contains +inf ({int(pos.sum())} entries; first at row {r}, candidate {k}); "
                         "a log-probability is at most 0 (-inf means probability 0).")
    dead = torch.isneginf(arr).all(-1)
    if dead.any():
        raise ValueError(f"{what} has rows that are all -inf (probability 0 everywhere; {int(dead.sum())} rows, "
                         f"first row {int(dead.nonzero()[0])}); every row must put mass on some candidate.")
    if logits:
        return torch.log_softmax(arr, dim=-1)
    lse = torch.logsumexp(arr, -1)
    tol = _LOGP_TOL.get(dtype, 1e-6)
    bad = lse.abs() > tol
    if not bad.any():
        return torch.log_softmax(arr, dim=-1)  # removes rounding below tol; not a guess
    n_bad, first = int(bad.sum()), int(bad.nonzero()[0])
    head = (f"{what} is not normalized log-probabilities: {n_bad} of {C} rows have logsumexp ≠ 0 "
            f"(row {first}: logsumexp {float(lse[first]):.4g}, values {_short(arr[first])}, dtype {str(dtype).replace('torch.', '')}).")
    finite = arr[torch.isfinite(arr)]
    if finite.numel() and bool((finite >= 0).all()):
        sums = arr.sum(-1)
        if bool((finite <= 1).all()) and torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            kind = "These look like probabilities (non-negative, rows sum to 1)"
        else:
            kind = (f"The values are non-negative (rows sum to {float(sums.min()):.4g}..{float(sums.max()):.4g}): "
                    "probabilities, scaled probabilities or scores")
    elif finite.numel() and bool((finite <= 0).all()):
        kind = (f"The values are ≤ 0 but rows are not normalized (logsumexp {float(lse.min()):.4g}..{float(lse.max()):.4g}): "
                "log of unnormalized weights")
    else:
        kind = "The values have both signs: these look like logits (unnormalized scores)"
    raise ValueError(f"{head} {kind}; evaluate never guesses: {fix}.")


def _short(row: torch.Tensor, n: int = 4) -> str:
    vals = ", ".join(f"{float(v):.4g}" for v in row[:n])
    return f"[{vals}{', ...' if row.numel() > n else ''}]"


def _check_shape(out: torch.Tensor, C: int, K: int) -> None:
    if tuple(out.shape) != (C, K):
        raise ValueError(f"policy output must have shape (C={C}, K={K}) over the evaluation contexts (got {tuple(out.shape)}).")


class EvalResult(dict):
    """The metrics of one policy: a plain ``dict`` (``res["gold_value"]``, ``json.dumps(res)``, ``**res`` all work)
    whose ``str()`` is a table with each metric's meaning (:mod:`tiltenv.glossary`, formulas in docs/metrics.md).

    Attribute access works too: ``res.gold_value``.
    """

    def __getattr__(self, name: str) -> float:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self) -> str:
        from tiltenv.glossary import entry

        lines = [f"tiltenv.evaluate: exact metrics over the judge's held-out contexts (β = {self.get('beta', float('nan')):g})"]
        for key, value in self.items():
            lines.append(f"  {key:<23} {value: .4f}   {(entry(key) or (key, ''))[0]}")
        lines.append("  (.explain() gives each metric's meaning; formulas: docs/metrics.md)")
        return "\n".join(lines)

    def explain(self) -> str:
        """Each metric's meaning and formula, one line each (:mod:`tiltenv.glossary`)."""
        from tiltenv.glossary import legend

        return legend(list(self), width=23)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython / Jupyter show the table
        p.text(str(self))


def evaluate_on_judge(policy: Any, judge: Any, *, beta: float | None = None, logits: bool = False) -> EvalResult:
    """All exact metrics of one policy (see :func:`evaluate`)."""
    logp = policy_logp(policy, judge.eval_candidates, judge.eval_ref_logp, logits=logits)
    return metrics_of_logp(logp, judge, beta=beta)


def metrics_of_logp(logp: torch.Tensor, judge: Any, *, beta: float | None = None) -> EvalResult:
    """Metrics of (C, K) log-probabilities over the judge's evaluation contexts."""
    beta = judge.config.beta if beta is None else check_float("beta", beta, low=0.0, low_open=True, allow_inf=True)
    ref = judge.eval_ref_logp
    gold, proxy = judge.eval_gold, judge.eval_proxy
    kl = M.kl_divergence(logp, ref)
    out = EvalResult({
        "gold_value": M.policy_value(logp, gold),
        "proxy_value": M.policy_value(logp, proxy),
        "ref_gold_value": M.policy_value(ref, gold),
        "max_gold_value": M.soft_value(ref, gold, 0.0),
        "kl": kl,
        "chi2": M.chi2_divergence(logp, ref),
        "objective": M.regularized_objective(logp, ref, gold, beta),
        "optimal_objective": M.soft_value(ref, gold, beta),
        "value_gap": M.value_gap(logp, ref, gold, beta),
        "normalized_score": M.normalized_score(logp, ref, gold, beta),
        "kl_matched_gap": M.kl_matched_gap(logp, ref, gold),
        "reward_variance_ref": M.reward_variance(ref, proxy),
        "reward_variance_policy": M.reward_variance(logp, proxy),
        "proxy_gold_corr": M.proxy_gold_correlation(ref, proxy, gold),
        "beta": beta,
    })
    extra = getattr(judge, "extra_metrics", None)  # e.g. a multi-objective judge's per-dimension values
    if extra is not None:
        out.update(extra(logp, beta))
    return out
