"""Proxy reward models: what the agent is rewarded by.

A proxy is a :class:`Proxy` (a ``torch.nn.Module``) mapping candidates ``x`` of shape ``(..., d)`` to
rewards of shape ``(...)``. It is trained in the judge's process from the simulated labels and then
handed to the agent as plain parameters. Every single-index proxy is normalized the way Gao et al. did:
centred so that π_ref's mean proxy reward is 0 and scaled to unit variance under π_ref, pooled over
contexts (never per context — that would erase the reward-variance effect of Razin et al.).

Registry (``TaskConfig.proxy``):

* ``gold`` — the true reward (oracle control).
* ``linear`` — a linear Bradley–Terry reward model ``r̂(x) = <w, x>`` fit by ridge-regularized
  Newton/IRLS on the BT negative log-likelihood (TRL's reward-trainer loss
  ``-log sigmoid(r̂(x_chosen) - r̂(x_rejected))``); with pointwise labels, ridge regression.

The base layer (the :class:`Proxy` module, the registry, ``gold`` and ``linear``) lives in
:mod:`tiltenv.rewards.proxy_base`; the learned-proxy family (``mlp``, ``two_stage``, ``ensemble``, ``parametric``)
in :mod:`tiltenv.rewards.reward_models`, which registers into the same registry. This module imports both, so
``tiltenv.rewards.proxies.PROXIES`` holds every kind. A spec with a
``skeleton`` (the untrained architecture) is trained once and cached on disk (:mod:`tiltenv.rewards.proxy_cache`).
"""

from __future__ import annotations

from tiltenv.rewards import reward_models as _reward_models  # noqa: F401  (registers mlp, two_stage, ensemble, parametric)
from tiltenv.rewards.proxy_base import (  # noqa: F401
    PROXIES,
    GoldOptions,
    GoldProxy,
    LinearOptions,
    LinearProxy,
    Proxy,
    ProxyContext,
    ProxySpec,
    TableProxy,
    _build_gold,
    _build_linear,
    check_proxy,
    fit_linear_bt,
    parse_options,
    register_proxy,
)

__all__ = [
    "Proxy",
    "GoldProxy",
    "LinearProxy",
    "TableProxy",
    "ProxySpec",
    "PROXIES",
    "register_proxy",
    "check_proxy",
    "ProxyContext",
    "fit_linear_bt",
]
