"""Exact metrics of a policy on a judge's evaluation contexts: the scoring core under both the world and
:mod:`tiltenv.evaluation` (``Judge.evaluate`` and ``tiltenv.evaluate`` both end here).

``policy_logp`` turns any supported policy form into (C, K) log-probabilities; ``metrics_of_logp`` computes
every exact metric of them against a judge (any object with ``config``, ``eval_candidates``,
``eval_ref_logp``, ``eval_gold`` and ``eval_proxy``); ``evaluate_on_judge`` is the two together.
:mod:`tiltenv.evaluation` re-exports all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tiltenv import metrics as M
from tiltenv._validation import check_float
from tiltenv.observations import format_obs, observation_space

__all__ = ["policy_logp", "metrics_of_logp", "evaluate_on_judge"]


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
        return torch.log_softmax(dist.distribution.logits.to(torch.float64), dim=-1).cpu()


def policy_logp(policy: Any, candidates: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Turn any supported policy form into (C, K) float64 log-probabilities on ``candidates``.

    Raises:
        ValueError: wrong shape, NaN, or rows that are neither probabilities nor log-probabilities.
        TypeError: an unsupported policy object.
    """
    C, K = ref_logp.shape
    if hasattr(policy, "policy") and hasattr(policy, "observation_space") and hasattr(policy, "predict"):
        return _sb3_logp(policy, candidates, ref_logp)
    if callable(policy) or hasattr(policy, "policy"):
        fn = policy.policy if hasattr(policy, "policy") and not isinstance(policy, torch.nn.Module) else policy
        with torch.no_grad():
            return _as_logp(fn(candidates, ref_logp), C, K, logits_ok=True)
    if isinstance(policy, (np.ndarray, torch.Tensor, Sequence)):
        return _as_logp(policy, C, K, logits_ok=False)
    raise TypeError(
        f"unsupported policy {type(policy).__name__}: pass a (C, K) array of probabilities/log-probabilities, "
        "a callable (candidates, ref_logp) -> log-probs, an agent with .policy(), or an SB3 model."
    )


def _as_logp(values: Any, C: int, K: int, *, logits_ok: bool) -> torch.Tensor:
    """A (C, K) policy output -> float64 log-probabilities.

    Rows of probabilities (non-negative, sum 1) or of log-probabilities (logsumexp 0) are recognized —
    both cannot hold at once (that would need rows of zeros summing to 1). Anything else is logits when
    ``logits_ok`` (callables may return unnormalized scores), an error otherwise.
    """
    try:
        arr = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"policy output must be a numeric (C={C}, K={K}) array (got {type(values).__name__}).") from None
    arr = arr.detach().cpu()
    _check_shape(arr, C, K)
    arr = arr.to(torch.float64)
    if torch.isnan(arr).any():
        raise ValueError("policy output contains NaN.")
    if bool((arr >= 0).all()) and torch.allclose(arr.sum(-1), torch.ones(C, dtype=torch.float64), atol=1e-6):
        return torch.log(arr / arr.sum(-1, keepdim=True))
    if bool((arr <= 0).all()) and torch.allclose(torch.logsumexp(arr, -1), torch.zeros(C, dtype=torch.float64), atol=1e-6):
        return torch.log_softmax(arr, dim=-1)
    if logits_ok:
        return torch.log_softmax(arr, dim=-1)
    raise ValueError("policy array rows must be probabilities (sum to 1) or log-probabilities (logsumexp 0).")


def _check_shape(out: torch.Tensor, C: int, K: int) -> None:
    if tuple(out.shape) != (C, K):
        raise ValueError(f"policy output must have shape (C={C}, K={K}) over the evaluation contexts (got {tuple(out.shape)}).")


def evaluate_on_judge(policy: Any, judge: Any, *, beta: float | None = None) -> dict[str, float]:
    """All exact metrics of one policy (see :func:`evaluate`)."""
    logp = policy_logp(policy, judge.eval_candidates, judge.eval_ref_logp)
    return metrics_of_logp(logp, judge, beta=beta)


def metrics_of_logp(logp: torch.Tensor, judge: Any, *, beta: float | None = None) -> dict[str, float]:
    """Metrics of (C, K) log-probabilities over the judge's evaluation contexts."""
    beta = judge.config.beta if beta is None else check_float("beta", beta, low=0.0, low_open=True, allow_inf=True)
    ref = judge.eval_ref_logp
    gold, proxy = judge.eval_gold, judge.eval_proxy
    kl = M.kl_divergence(logp, ref)
    return {
        "gold_value": M.policy_value(logp, gold),
        "proxy_value": M.policy_value(logp, proxy),
        "ref_gold_value": M.policy_value(ref, gold),
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
    }
