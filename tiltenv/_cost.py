"""How long a proxy build will take, estimated before it starts.

One rule for every option that makes training long (``epochs``, ``batch_size``, ``width``, ``depth``,
ensemble ``k`` and ``diversity``, ``n_labels``, ``d``): the estimate is monotone in each, so the range it
enforces (:data:`MAX_PROXY_SECONDS`) is one bound for all of them, not one bound per option.

The model is fitted on the reference machine (2-core AMD EPYC, AVX2, one torch thread, 2026-11-26) and
prints as "on a 2-core CPU":

* ``mlp`` (and its ensembles): each optimizer step costs a fixed :data:`STEP_SECONDS` (autograd, AdamW,
  kernel dispatch) plus :data:`MEMBER_STEP_SECONDS` per further member trained in the same batched step,
  and the arithmetic (forward + backward ≈ 6 flops per parameter per sample) runs at
  :data:`MLP_FLOPS`. Fitted on 11 builds (width 32–1024, depth 1–3, batch 32 to full, k 1–5, 2k–16k
  labels at d = 64): within −32 % / +18 % of the measured training time (full-batch builds, slowest per
  flop, are the −32 %). The 16k-label default ``mlp`` is estimated at 1.56 s and measured at 1.64 s;
  an ensemble of 5 at 3.67 s, measured 3.62 s.
  Before this model the estimate was flops / 2 GFLOP/s, which announced that build as "about 16 s".
* ``two_stage``: its dense float64 fits at :data:`DENSE_FLOPS` (measured 10–19 GFLOP/s).
* ``linear``: Newton/IRLS with every one of ``max_iter`` iterations counted (an upper bound: the fit
  stops at ``tol``, usually within ~10).
* ``transformer`` (token tasks, :mod:`tiltenv.worlds.tokens.reward_model`): each AdamW step costs
  :data:`TRANSFORMER_STEP_SECONDS` per block (its ~40 small kernels forward and backward), and the arithmetic
  (≈ 6 flops per weight per token, plus the attention's ``T²``) runs at :data:`TRANSFORMER_FLOPS` (small
  ``d_model`` GEMMs are slow per flop); ``seq_len`` is the sequences' length ``prompt_len + L``. Fitted on 4
  builds (d_model 32–128, 1–2 blocks, batch 64–256, V = 8, L = P = 4, 2k labels): within −30 % / +120 % (the
  wide d_model = 128 model is the overestimate: wider GEMMs run faster per flop).

``scripts/bench.py`` prints the estimate next to the measured build, so drift on other machines shows.
"""

from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["proxy_flops", "proxy_seconds", "check_proxy_cost", "MAX_PROXY_SECONDS", "STEP_SECONDS",
           "MEMBER_STEP_SECONDS", "MLP_FLOPS", "DENSE_FLOPS", "TRANSFORMER_STEP_SECONDS", "TRANSFORMER_FLOPS"]

#: Fixed cost of one optimizer step of the batched MLP trainer (one member).
STEP_SECONDS = 4.4e-4
#: Extra cost per step of each further ensemble member trained in the same batched step.
MEMBER_STEP_SECONDS = 3.7e-5
#: Effective float32 training arithmetic of the MLP trainer (GEMMs and the elementwise work around them).
MLP_FLOPS = 7.5e10
#: Effective float64 arithmetic of the closed-form fits (two_stage, linear).
DENSE_FLOPS = 1e10
#: Fixed cost of one AdamW step of the token transformer proxy, per block.
TRANSFORMER_STEP_SECONDS = 4.0e-3
#: Effective float32 training arithmetic of the token transformer proxy.
TRANSFORMER_FLOPS = 1.5e10
#: Largest estimated proxy build accepted: one hour. ``TILTENV_ALLOW_LONG_BUILDS=1`` lifts it.
MAX_PROXY_SECONDS = 3600.0


def _samples(n_labels: int, label_kind: str) -> int:
    return n_labels * (1 if label_kind == "pointwise" else 2)


def _mlp_params(o: Any, d: int, readout_only: bool = False) -> int:
    if readout_only:
        return o.width + 1
    return d * o.width + (o.depth - 1) * o.width**2 + o.width


def _mlp_steps(o: Any, n_labels: int) -> int:
    """AdamW steps of :func:`tiltenv.rewards.reward_models.train_mlps`: ``batch_size`` counts pairs (or points)."""
    per_epoch = 1 if o.batch_size == 0 or o.batch_size >= n_labels else math.ceil(n_labels / o.batch_size)
    return o.epochs * per_epoch


def _transformer_steps(o: Any, n_labels: int) -> int:
    per_epoch = 1 if o.batch_size == 0 or o.batch_size >= n_labels else math.ceil(n_labels / o.batch_size)
    return o.epochs * per_epoch


def proxy_flops(kind: str, options: Any, *, d: int, n_labels: int, label_kind: str, seq_len: int = 1) -> float:
    """Estimated flops to train a proxy of ``kind`` with validated ``options`` on the task's labels (``seq_len``:
    the token sequences' length, for the ``transformer`` kind)."""
    samples = _samples(n_labels, label_kind)
    if kind == "transformer":
        o, T = options, seq_len
        per_token = o.n_layers * (4 * o.d_model**2 + 2 * o.d_model * o.d_ff + 2 * T * o.d_model)
        return 6.0 * per_token * T * samples * o.epochs
    if kind == "mlp":
        return 6.0 * _mlp_params(options, d) * samples * options.epochs
    if kind == "two_stage":
        m = options.width
        return 10.0 * m * samples * d + 2.0 * samples * m**2 + m**3
    if kind == "linear":
        return getattr(options, "max_iter", 50) * (2.0 * samples * d**2 + d**3)
    if kind == "ensemble":
        member = options.member_options
        return options.k * proxy_flops(options.member, member, d=d, n_labels=n_labels, label_kind=label_kind)
    return 0.0  # gold, parametric: built in closed form


def _mlp_seconds(o: Any, *, d: int, n_labels: int, label_kind: str, k: int = 1, readout_only: bool = False) -> float:
    """``k`` same-architecture MLPs trained together (one batched step per minibatch)."""
    flops = 6.0 * _mlp_params(o, d, readout_only) * _samples(n_labels, label_kind) * o.epochs * k
    return _mlp_steps(o, n_labels) * (STEP_SECONDS + (k - 1) * MEMBER_STEP_SECONDS) + flops / MLP_FLOPS


def proxy_seconds(kind: str, options: Any, *, d: int, n_labels: int, label_kind: str, seq_len: int = 1) -> float:
    """Estimated seconds to train a proxy of ``kind`` on the reference 2-core CPU, one torch thread."""
    size = dict(d=d, n_labels=n_labels, label_kind=label_kind)
    if kind == "transformer":
        steps = _transformer_steps(options, n_labels) * TRANSFORMER_STEP_SECONDS * options.n_layers
        return steps + proxy_flops(kind, options, **size, seq_len=seq_len) / TRANSFORMER_FLOPS
    if kind == "mlp":
        return _mlp_seconds(options, **size)
    if kind == "ensemble":
        k, m = options.k, options.member_options
        if options.member == "mlp":
            # members train together; feature diversity adds a pre-trained shared member or a readout refit
            if options.diversity == "shared_features":
                return _mlp_seconds(m, **size) + _mlp_seconds(m, **size, k=k, readout_only=True)
            readout = _mlp_seconds(m, **size, k=k, readout_only=True) if options.diversity == "independent_features" else 0.0
            return _mlp_seconds(m, **size, k=k) + readout
        extra = 1 if options.diversity == "shared_features" else 0
        return (k + extra) * proxy_seconds(options.member, m, **size)
    return proxy_flops(kind, options, **size) / DENSE_FLOPS


def check_proxy_cost(kind: str, options: Any, *, d: int, n_labels: int, label_kind: str, seq_len: int = 1) -> float:
    """Refuse a proxy whose estimated training exceeds :data:`MAX_PROXY_SECONDS`; returns the estimate (s)."""
    seconds = proxy_seconds(kind, options, d=d, n_labels=n_labels, label_kind=label_kind, seq_len=seq_len)
    if seconds > MAX_PROXY_SECONDS and os.environ.get("TILTENV_ALLOW_LONG_BUILDS", "").strip() not in ("1", "true", "yes"):
        knobs = {"mlp": "epochs, batch_size, width, depth", "two_stage": "width", "linear": "max_iter",
                 "ensemble": "k and the member's epochs/batch_size/width/depth",
                 "transformer": "epochs, batch_size, d_model, d_ff, n_layers"}.get(kind, "its options")
        flops = proxy_flops(kind, options, d=d, n_labels=n_labels, label_kind=label_kind, seq_len=seq_len)
        raise ValueError(
            f"the {kind!r} proxy would take about {seconds / 3600:.1f} h to train on a 2-core CPU "
            f"(~{flops:.2g} flops from proxy_kwargs {knobs}, n_labels {n_labels}, d {d}); the limit is "
            f"{MAX_PROXY_SECONDS / 3600:.0f} h. Lower {knobs} or n_labels, or set "
            "TILTENV_ALLOW_LONG_BUILDS=1 if you mean it (e.g. on a GPU)."
        )
    return seconds
