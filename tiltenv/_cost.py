"""How long a proxy build will take, estimated before it starts (floating-point operations).

The estimate is coarse (forward + backward ≈ 6 flops per parameter per sample) but monotone in every
option that makes training long (``epochs``, ``width``, ``depth``, ensemble ``k``, ``n_labels``, ``d``), so the
range it enforces is one rule for all of them, not one bound per option.

Measured on a 2-core CPU (one torch thread): the default ``mlp`` proxy, ~2.5e9 flops by this estimate, trains in
about 1.5 s, i.e. ~2 GFLOP/s effective (:data:`CPU_FLOPS`).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["proxy_flops", "check_proxy_cost", "estimated_seconds", "MAX_PROXY_FLOPS", "CPU_FLOPS"]

#: Effective training speed of a 2-core CPU (see the module docstring); used to turn flops into seconds.
CPU_FLOPS = 2e9
#: Largest estimated proxy build accepted: ~1 hour at :data:`CPU_FLOPS`. ``TILTENV_ALLOW_LONG_BUILDS=1`` lifts it.
MAX_PROXY_FLOPS = 3600 * CPU_FLOPS


def proxy_flops(kind: str, options: Any, *, d: int, n_labels: int, label_kind: str) -> float:
    """Estimated flops to train a proxy of ``kind`` with validated ``options`` on the task's labels."""
    samples = n_labels * (1 if label_kind == "pointwise" else 2)
    if kind == "mlp":
        params = d * options.width + (options.depth - 1) * options.width**2 + options.width
        return 6.0 * params * samples * options.epochs
    if kind == "two_stage":
        m = options.width
        return 10.0 * m * samples * d + 2.0 * samples * m**2 + m**3
    if kind == "linear":
        return getattr(options, "max_iter", 50) * (2.0 * samples * d**2 + d**3)
    if kind == "ensemble":
        member = options.member_options
        return options.k * proxy_flops(options.member, member, d=d, n_labels=n_labels, label_kind=label_kind)
    return 0.0  # gold, parametric: built in closed form


def estimated_seconds(flops: float) -> float:
    return flops / CPU_FLOPS


def check_proxy_cost(kind: str, options: Any, *, d: int, n_labels: int, label_kind: str) -> float:
    """Refuse a proxy whose estimated training exceeds :data:`MAX_PROXY_FLOPS`; returns the estimate."""
    flops = proxy_flops(kind, options, d=d, n_labels=n_labels, label_kind=label_kind)
    if flops > MAX_PROXY_FLOPS and os.environ.get("TILTENV_ALLOW_LONG_BUILDS", "").strip() not in ("1", "true", "yes"):
        knobs = {"mlp": "epochs, width, depth", "two_stage": "width", "linear": "max_iter",
                 "ensemble": "k and the member's epochs/width/depth"}.get(kind, "its options")
        raise ValueError(
            f"the {kind!r} proxy would take about {estimated_seconds(flops) / 3600:.1f} h to train on a 2-core CPU "
            f"(~{flops:.2g} flops from proxy_kwargs {knobs}, n_labels {n_labels}, d {d}); the limit is "
            f"{estimated_seconds(MAX_PROXY_FLOPS) / 3600:.0f} h. Lower {knobs} or n_labels, or set "
            "TILTENV_ALLOW_LONG_BUILDS=1 if you mean it (e.g. on a GPU)."
        )
    return flops
