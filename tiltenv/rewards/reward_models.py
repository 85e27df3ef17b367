"""Learned and controlled-error proxy reward models: ``mlp``, ``two_stage``, ``ensemble``, ``parametric``.

Every kind registers a :class:`~tiltenv.rewards.proxies.ProxySpec` (options dataclass + builder) in
:data:`tiltenv.rewards.proxies.PROXIES`; pick one with ``TaskConfig(proxy=..., proxy_kwargs={...})`` or
``gym.make("tiltenv/SingleIndex-v0", proxy=..., proxy_kwargs={...})``. Options are frozen dataclasses
whose fields carry their help text (``dataclasses.fields(MLPOptions)[i].metadata["help"]``); a wrong
name or value raises an error naming the option and the valid choices.

* ``mlp`` — Bradley–Terry MLP reward model. Loss: the BT negative log-likelihood
  ``-[y log σ(r̂(x_a) - r̂(x_b)) + (1-y) log σ(r̂(x_b) - r̂(x_a))]``, i.e. TRL's ``RewardTrainer`` loss
  ``-log σ(r̂(chosen) - r̂(rejected))`` (Ouyang et al. 2022, eq. 1) for hard labels; AdamW, full batch
  or minibatches; pointwise labels: squared error.
* ``two_stage`` — Wachi et al. 2026, "How Neural Reward Models Learn Features for Policy Optimization:
  A Single-Index Analysis" (arXiv:2605.24749). Stage 1: the first layer ``W`` (m neurons, initialized
  uniformly on the sphere) takes one large gradient step on the reward-weighted correlation loss
  ``L(W) = -Σ_i q_i y_i Σ_j σ(<w_j, x_i>)`` with self-normalized weights ``q_i ∝ e^{y_i/β1}``
  (``β1 = inf``: uniform), then every neuron is normalized. Stage 2: features ``σ(<w_j, x> + b_j)``
  (random biases) and the readout by weighted ridge regression with weights ``e^{y/β2}`` (``label``),
  ``e^{r_a0(x)/β2}`` from an unweighted pilot readout ``a0`` (``surrogate``) or none.
* ``ensemble`` — k members of a learned kind with a diversity source and an aggregator
  (``mean``, ``min`` = WCO, ``uwo`` = mean − λ·population variance, ``median``, ``mean_minus_std``).
  Members are normalized under π_ref before aggregation (Coste et al. 2024).
* ``parametric`` — no training: a single-index proxy at a requested angle to θ*, with link distortion
  and error pockets, to dial accuracy and harmful vs benign errors apart. It is an oracle control like
  ``gold``: its parameters reveal θ* up to the requested angle.

Training is deterministic per seed (the task's ``proxy_init`` stream): on CPU, the same config gives a
bit-identical proxy. ``device="auto"`` trains on CUDA when present (the cache key records the device).

Example:
    >>> from tiltenv import TaskConfig, make_world
    >>> cfg = TaskConfig(d=8, K=8, n_labels=500, proxy="mlp", proxy_kwargs={"epochs": 50},
    ...                  n_eval_contexts=64, n_norm_contexts=256)
    >>> make_world(cfg).task.proxy.kind
    'mlp'
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tiltenv._validation import check_choice, check_float, check_int
from tiltenv.rewards.links import LINKS
from tiltenv.rewards.labels import PointwiseData, PreferenceData
from tiltenv.rewards.proxy_base import LinearProxy, Proxy, ProxyContext, ProxySpec, _build_linear, parse_options, register_proxy

__all__ = [
    "ACTIVATIONS",
    "TrainData",
    "MLPOptions",
    "MLPProxy",
    "TwoStageOptions",
    "TwoStageProxy",
    "EnsembleOptions",
    "EnsembleProxy",
    "AGGREGATORS",
    "DIVERSITY",
    "ParametricOptions",
    "ParametricProxy",
    "stage1_weights",
    "effective_sample_size",
    "resolve_device",
    "train_mlp",
    "train_mlps",
    "single_threaded",
    "fit_stage1",
    "fit_stage2",
]

#: Activations for the hidden layers (``mlp``) and the first layer (``two_stage``).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
}
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Candidates per chunk when a learned proxy scores a large batch: bounds the activation memory and keeps
#: the hidden activations cache-resident (4096 × 256 float32 = 4 MB; 3x faster than 65536-row chunks).
_CHUNK = 1 << 12


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _name(option: str) -> str:
    return f"proxy_kwargs[{option!r}]"


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("proxy_kwargs['device']='cuda' was requested but CUDA is not available; use 'cpu' or 'auto'.")
    return torch.device(device)


@contextlib.contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Train on one CPU thread (restored afterwards).

    The models are small (minibatches of ~10^2 rows): extra intra-op threads only add synchronization,
    and on a loaded machine they slow training down by 10-30x. One thread also makes CPU training
    bit-identical whatever the machine's thread count.
    """
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g


def _child_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``seed`` (``SeedSequence.spawn``)."""
    return [int(c.generate_state(2, np.uint64)[0] >> np.uint64(1)) for c in np.random.SeedSequence(int(seed)).spawn(n)]


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a per-candidate ``fn`` ((n, d) -> (n,)) to ``x`` of shape (..., d) in bounded chunks."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] <= _CHUNK:
        return fn(flat).reshape(lead)
    return torch.cat([fn(flat[i:i + _CHUNK]) for i in range(0, flat.shape[0], _CHUNK)]).reshape(lead)


# --------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class TrainData:
    """The labels a proxy trains on: pairwise ``(x_a, x_b, label)`` or pointwise ``(x, y)``.

    Attributes:
        kind: ``"pairwise"`` or ``"pointwise"``.
        x_a, x_b: (n, d) pair candidates; label: (n,) in [0, 1] (1 = a ≻ b). Pairwise only.
        x: (n, d) candidates; y: (n,) scores. Pointwise only.
    """

    kind: str
    x_a: torch.Tensor | None = None
    x_b: torch.Tensor | None = None
    label: torch.Tensor | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @classmethod
    def from_context(cls, ctx: ProxyContext) -> "TrainData":
        if ctx.preferences is not None:
            p = ctx.preferences
            return cls("pairwise", x_a=p.x_a, x_b=p.x_b, label=p.label)
        if ctx.pointwise is not None:
            return cls("pointwise", x=ctx.pointwise.x, y=ctx.pointwise.y)
        raise ValueError("this proxy needs labels, but the task provides neither preferences nor pointwise scores.")

    def __len__(self) -> int:
        return int((self.label if self.kind == "pairwise" else self.y).shape[0])

    @property
    def d(self) -> int:
        return int((self.x_a if self.kind == "pairwise" else self.x).shape[1])

    def subset(self, idx: torch.Tensor) -> "TrainData":
        if self.kind == "pairwise":
            return TrainData("pairwise", x_a=self.x_a[idx], x_b=self.x_b[idx], label=self.label[idx])
        return TrainData("pointwise", x=self.x[idx], y=self.y[idx])

    def bootstrap(self, generator: torch.Generator) -> "TrainData":
        """A resample of ``n`` labels with replacement."""
        n = len(self)
        return self.subset(torch.randint(0, n, (n,), generator=generator))

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> "TrainData":
        cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return TrainData(self.kind, cast(self.x_a), cast(self.x_b), cast(self.label), cast(self.x), cast(self.y))

    def as_pointwise(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scalar labels ``(x, y)`` in float64 for regression-style fits.

        Pointwise data is returned as is. A pair becomes two items with **win scores**: the preferred
        candidate gets ``y = +1``, the other ``y = -1`` (soft labels: ``2·label − 1`` and its negative).
        For a deterministic labeler ``E[y | x] = 2 P(x beats a π_ref draw) − 1``, a monotone transform of
        r*(x): still a single-index label, but with its own Hermite exponents (a transform can lower the
        information exponent of an odd link such as ``he3``).
        """
        if self.kind == "pointwise":
            return self.x.to(torch.float64), self.y.to(torch.float64)
        s = 2.0 * self.label.to(torch.float64) - 1.0
        return torch.cat([self.x_a, self.x_b]).to(torch.float64), torch.cat([s, -s])


# --------------------------------------------------------------------------- mlp


def _check_common_mlp(o: Any) -> None:
    _set(o, "width", check_int(_name("width"), o.width, low=1, high=1_000_000))
    _set(o, "depth", check_int(_name("depth"), o.depth, low=1, high=64))
    check_choice(_name("activation"), o.activation, sorted(ACTIVATIONS))
    _set(o, "lr", check_float(_name("lr"), o.lr, low=0.0, low_open=True))
    _set(o, "epochs", check_int(_name("epochs"), o.epochs, low=1))
    _set(o, "batch_size", check_int(_name("batch_size"), o.batch_size, low=0))
    _set(o, "weight_decay", check_float(_name("weight_decay"), o.weight_decay, low=0.0))
    check_choice(_name("device"), o.device, DEVICE_CHOICES)


@dataclass(frozen=True)
class MLPOptions:
    """Options of the ``mlp`` Bradley–Terry reward model (TRL ``RewardConfig`` style)."""

    width: int = _opt(64, "Hidden units per layer.")
    depth: int = _opt(2, "Number of hidden layers (>= 1).")
    activation: str = _opt("relu", f"Hidden activation, one of {sorted(ACTIVATIONS)}.")
    lr: float = _opt(3e-3, "AdamW learning rate.")
    epochs: int = _opt(20, "Passes over the labels (full batch: one step per epoch).")
    batch_size: int = _opt(128, "Minibatch size in pairs (or points); 0 = full batch.")
    weight_decay: float = _opt(1e-4, "AdamW decoupled weight decay.")
    device: str = _opt("auto", "Training device: 'auto' (CUDA when present), 'cpu' or 'cuda'.")

    def __post_init__(self) -> None:
        _check_common_mlp(self)


def _init_linear(layer: torch.nn.Linear, g: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (U(±1/sqrt(fan_in))) drawn from an explicit generator."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=g))
        layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=g))


class MLPProxy(Proxy):
    """``r̂(x) = v · h_L(x) + c`` with ``h_l = act(W_l h_{l-1} + b_l)``; float32 parameters.

    ``features`` are the hidden layers (the "first layer" of an ensemble's diversity options) and
    ``readout`` the last linear layer.
    """

    kind = "mlp"

    def __init__(self, d: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        layers: list[torch.nn.Module] = []
        fan_in = d
        for _ in range(depth):
            layers += [torch.nn.Linear(fan_in, width), _Activation(activation)]
            fan_in = width
        self.features = torch.nn.Sequential(*layers)
        self.readout = torch.nn.Linear(fan_in, 1)

    def init_parameters(self, g: torch.Generator, *, readout_only: bool = False) -> None:
        mods = [self.readout] if readout_only else [m for m in self.features if isinstance(m, torch.nn.Linear)] + [self.readout]
        for m in mods:
            _init_linear(m, g)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Unchunked raw score of (n, d) float32 candidates (used in training)."""
        return self.readout(self.features(x)).squeeze(-1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        p = self.readout.weight
        out = _chunked(lambda t: self.score(t.to(p.device, p.dtype)), x)
        return out.to(x.device)


class _Activation(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


def train_mlp(
    model: MLPProxy,
    data: TrainData,
    opts: MLPOptions,
    seed: int,
    device: torch.device,
    *,
    readout_only: bool = False,
) -> MLPProxy:
    """Train ``model`` in place on ``data`` (AdamW, BT NLL or squared error); returns it on the CPU.

    Minibatch order comes from a generator seeded with ``seed``; the model's initialization is the
    caller's (see :meth:`MLPProxy.init_parameters`). ``readout_only`` freezes the hidden layers.
    One member of :func:`train_mlps` (the same code path as an ensemble's members).
    """
    return train_mlps([model], [data], opts, [seed], device, readout_only=readout_only)[0]


def _stacked_score(weights: list[torch.Tensor], biases: list[torch.Tensor], act: Callable, x: torch.Tensor,
                   readout_only: bool) -> torch.Tensor:
    """k MLPs at once: stacked weights (k, out, in), biases (k, out), x (k, B, d) -> scores (k, B)."""
    h = x
    with torch.no_grad() if readout_only else contextlib.nullcontext():
        for W, b in zip(weights[:-1], biases[:-1]):
            h = act(torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2)))
    return torch.baddbmm(biases[-1].unsqueeze(1), h, weights[-1].transpose(1, 2)).squeeze(-1)


def train_mlps(
    models: list[MLPProxy],
    datas: list[TrainData],
    opts: MLPOptions,
    seeds: list[int],
    device: torch.device,
    *,
    readout_only: bool = False,
) -> list[MLPProxy]:
    """Train k same-architecture MLPs together, each on its own data and minibatch order (batched weights).

    The members' parameters are stacked into (k, ...) tensors and every step runs one batched forward /
    backward (``baddbmm``) and one AdamW step for all of them: no Python loop over members. The loss is
    the sum of the members' own mean losses, so each member's gradient — and, AdamW being elementwise,
    its update — is exactly what training it alone would give (up to floating-point rounding of the
    batched kernels). All members need the same number of labels (a bootstrap resample keeps ``n``).
    Minibatch orders for all epochs are drawn up front from each member's generator (seeded with its
    ``seeds[i]``) and moved to ``device`` once; the loop reads nothing back to the host.

    Returns:
        the trained models, on the CPU, with ``requires_grad`` off.
    """
    k = len(models)
    if not (k == len(datas) == len(seeds)) or k == 0:
        raise ValueError(f"train_mlps needs one data set and one seed per model (got {k} models, "
                         f"{len(datas)} data sets, {len(seeds)} seeds).")
    n = len(datas[0])
    if any(len(dt) != n for dt in datas) or any(dt.kind != datas[0].kind for dt in datas):
        raise ValueError("train_mlps: every member needs the same kind and number of labels.")
    pairwise = datas[0].kind == "pairwise"
    cols = ("x_a", "x_b", "label") if pairwise else ("x", "y")
    stacked = {c: torch.stack([getattr(dt, c) for dt in datas]).to(device=device, dtype=torch.float32) for c in cols}
    linears = [[m for m in model.features if isinstance(m, torch.nn.Linear)] + [model.readout] for model in models]
    weights = [torch.stack([ls[j].weight.detach() for ls in linears]).to(device).contiguous()
               for j in range(len(linears[0]))]
    biases = [torch.stack([ls[j].bias.detach() for ls in linears]).to(device).contiguous()
              for j in range(len(linears[0]))]
    params = [weights[-1], biases[-1]] if readout_only else weights + biases
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay, fused=True)  # one kernel per tensor
    act = ACTIVATIONS[models[0].activation]
    bs = n if opts.batch_size == 0 or opts.batch_size >= n else opts.batch_size
    offsets = (torch.arange(k) * n).unsqueeze(1)
    if bs < n:  # (epochs, k, n) flat row indices into the stacked data, one generator per member
        gens = [_generator(s) for s in seeds]
        order = torch.stack([torch.stack([torch.randperm(n, generator=g) for g in gens]) + offsets
                             for _ in range(opts.epochs)]).to(device)
    flat = {c: t.reshape(k * n, *t.shape[2:]) for c, t in stacked.items()}

    def take(c: str, idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:
            return stacked[c]
        return flat[c].index_select(0, idx.reshape(-1)).reshape(k, idx.shape[1], *flat[c].shape[1:])

    with torch.enable_grad():
        for epoch in range(opts.epochs):
            for start in range(0, n, bs):
                idx = None if bs == n else order[epoch, :, start:start + bs]
                if pairwise:
                    m = stacked["x_a"].shape[1] if idx is None else idx.shape[1]
                    r = _stacked_score(weights, biases, act, torch.cat([take("x_a", idx), take("x_b", idx)], 1),
                                       readout_only)
                    # Bradley–Terry NLL (TRL RewardTrainer: -log σ(r_chosen − r_rejected)); soft labels allowed.
                    loss = F.binary_cross_entropy_with_logits(r[:, :m] - r[:, m:], take("label", idx)) * k
                else:
                    loss = F.mse_loss(_stacked_score(weights, biases, act, take("x", idx), readout_only),
                                      take("y", idx)) * k
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    out = []
    for i, (model, ls) in enumerate(zip(models, linears)):
        with torch.no_grad():
            for j, layer in enumerate(ls):
                layer.weight.copy_(weights[j][i].cpu())
                layer.bias.copy_(biases[j][i].cpu())
        model.requires_grad_(False)
        out.append(model.cpu())
    return out


def _mlp_skeleton(opts: MLPOptions, d: int) -> MLPProxy:
    return MLPProxy(d, opts.width, opts.depth, opts.activation)


def _build_mlp(opts: MLPOptions, ctx: ProxyContext) -> Proxy:
    data = TrainData.from_context(ctx)
    model = _mlp_skeleton(opts, ctx.d)
    model.init_parameters(_generator(ctx.seed))
    device = resolve_device(opts.device)
    with single_threaded(device):
        return train_mlp(model, data, opts, ctx.seed + 1, device)


# --------------------------------------------------------------------------- two-stage (Wachi et al. 2026)

WEIGHTINGS = ("label", "surrogate", "none")


@dataclass(frozen=True)
class TwoStageOptions:
    """Options of the ``two_stage`` model (Wachi et al. 2026, arXiv:2605.24749)."""

    width: int = _opt(256, "Number m of first-layer neurons.")
    beta1: float = _opt(1.0, "Feature-learning temperature β1 of q_i ∝ exp(y_i/β1); inf = uniform weights.")
    beta2: float = _opt(1.0, "Readout temperature β2 of the weights exp(y/β2) or exp(r_a0(x)/β2).")
    weighting: str = _opt("none", f"Readout weighting, one of {list(WEIGHTINGS)}: label exp(y/β2), "
                                  "surrogate exp(r_a0(x)/β2) from an unweighted pilot readout, none.")
    ridge: float = _opt(1e-3, "Ridge strength λ of the readout (on the weighted-mean squared error).")
    activation: str = _opt("relu", f"First-layer activation σ, one of {sorted(ACTIVATIONS)}.")
    step_size: float = _opt(math.inf, "Stage-1 step η relative to the mean gradient norm: w ← w + η g/mean||g||; "
                                      "inf = the step alone (initialization discarded).")
    center: bool = _opt(False, "Drive stage 1 with q_i (y_i − Σ q y) instead of q_i y_i.")
    bias_range: float = _opt(3.0, "Stage-2 feature biases b_j ~ U(−bias_range, bias_range).")
    device: str = _opt("auto", "Device: 'auto' (CUDA when present), 'cpu' or 'cuda'.")

    def __post_init__(self) -> None:
        _set(self, "width", check_int(_name("width"), self.width, low=1, high=1_000_000))
        for name in ("beta1", "beta2"):
            _set(self, name, check_float(_name(name), getattr(self, name), low=0.0, low_open=True, allow_inf=True))
        check_choice(_name("weighting"), self.weighting, WEIGHTINGS)
        _set(self, "ridge", check_float(_name("ridge"), self.ridge, low=0.0))
        check_choice(_name("activation"), self.activation, sorted(ACTIVATIONS))
        _set(self, "step_size", check_float(_name("step_size"), self.step_size, low=0.0, low_open=True, allow_inf=True))
        if not isinstance(self.center, bool):
            raise TypeError(f"{_name('center')} must be True or False (got {self.center!r}).")
        _set(self, "bias_range", check_float(_name("bias_range"), self.bias_range, low=0.0))
        check_choice(_name("device"), self.device, DEVICE_CHOICES)


def stage1_weights(y: torch.Tensor, beta1: float) -> torch.Tensor:
    """Self-normalized reward weights ``q_i = e^{y_i/β1} / Σ_j e^{y_j/β1}`` (uniform for ``β1 = inf``)."""
    y = y.to(torch.float64)
    if math.isinf(beta1):
        return torch.full_like(y, 1.0 / y.shape[0])
    return torch.softmax(y / beta1, dim=0)


def effective_sample_size(q: torch.Tensor) -> float:
    """Kish's effective sample size ``(Σ q)² / Σ q²`` of non-negative weights."""
    q = q.to(torch.float64)
    return float(q.sum() ** 2 / (q * q).sum())


def fit_stage1(x: torch.Tensor, y: torch.Tensor, opts: TwoStageOptions, seed: int) -> tuple[torch.Tensor, float]:
    """Stage 1: one large step on the weighted correlation loss from a spherical init.

    ``L(W) = -Σ_i q_i t_i Σ_j σ(<w_j, x_i>)`` with ``t_i = y_i`` (or ``y_i − Σ q y`` if ``center``);
    ``w_j ← normalize(w_j − η ∇_{w_j} L / mean_j ||∇_{w_j} L||)`` (``η = inf``: ``normalize(−∇L)``).

    Args:
        x: (n, d) float64; y: (n,) float64 labels; seed: init seed.
    Returns:
        W: (m, d) float64 unit rows; ESS of q.
    """
    n, d = x.shape
    g = _generator(seed)
    w0 = torch.randn((opts.width, d), generator=g, dtype=torch.float64).to(x.device)
    w0 = w0 / w0.norm(dim=1, keepdim=True)
    q = stage1_weights(y, opts.beta1)
    t = y - (q * y).sum() if opts.center else y
    w = w0.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = -((q * t) @ ACTIVATIONS[opts.activation](x @ w.T)).sum()
        (grad,) = torch.autograd.grad(loss, w)
    step = -grad
    norms = step.norm(dim=1, keepdim=True)
    if math.isinf(opts.step_size):
        new = step
    else:
        new = w0 + opts.step_size * step / norms.mean().clamp_min(1e-300)
    # A neuron whose gradient vanished (e.g. a dead relu) keeps its initialization.
    new = torch.where(new.norm(dim=1, keepdim=True) > 0, new, w0)
    return new / new.norm(dim=1, keepdim=True), effective_sample_size(q)


def _ridge(phi: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: float) -> torch.Tensor:
    """Weighted ridge with an unpenalized last (intercept) column; weights normalized to sum 1."""
    w = w / w.sum()
    p = phi.shape[1]
    reg = torch.full((p,), lam, dtype=phi.dtype, device=phi.device)
    reg[-1] = 0.0
    A = (phi.T * w) @ phi + torch.diag(reg)
    b = (phi.T * w) @ y
    try:
        return torch.linalg.solve(A, b)
    except RuntimeError:  # singular (λ = 0 and collinear features)
        return torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)


def _exp_weights(s: torch.Tensor, beta: float) -> torch.Tensor:
    if math.isinf(beta):
        return torch.ones_like(s)
    return torch.exp((s - s.max()) / beta)


def fit_stage2(
    x: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, opts: TwoStageOptions
) -> tuple[torch.Tensor, float, float]:
    """Stage 2: readout ``(a, c)`` of features ``σ(x Wᵀ + b)`` by weighted ridge regression.

    Returns:
        readout (m + 1,) float64 (last entry the intercept) and the ESS of the stage-2 weights.
    """
    act = ACTIVATIONS[opts.activation]
    phi = torch.cat([act(x @ W.T + b), torch.ones_like(y).unsqueeze(1)], dim=1)
    ones = torch.ones_like(y)
    if opts.weighting == "none":
        weights = ones
    elif opts.weighting == "label":
        weights = _exp_weights(y, opts.beta2)
    else:
        pilot = _ridge(phi, y, ones, opts.ridge)
        weights = _exp_weights(phi @ pilot, opts.beta2)
    coef = _ridge(phi, y, weights, opts.ridge)
    return coef, effective_sample_size(weights)


class TwoStageProxy(Proxy):
    """``r̂(x) = Σ_j a_j σ(<w_j, x> + b_j) + c`` (float64 buffers).

    Buffers ``stage1_ess`` / ``stage2_ess`` record the effective sample sizes of the training weights.
    """

    kind = "two_stage"

    def __init__(self, d: int, width: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.register_buffer("W", z(width, d))
        self.register_buffer("b", z(width))
        self.register_buffer("a", z(width))
        self.register_buffer("c", z(()))
        self.register_buffer("stage1_ess", z(()))
        self.register_buffer("stage2_ess", z(()))

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](x @ self.W.T + self.b)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in the candidates' floating dtype (float32 candidates: float32 matmuls, 4x faster).
        dtype = x.dtype if x.is_floating_point() else torch.float64
        W, b, a, c = (t.to(dtype) for t in (self.W, self.b, self.a, self.c))
        act = ACTIVATIONS[self.activation]
        relu = self.activation == "relu" and not torch.is_grad_enabled()

        def f(t: torch.Tensor) -> torch.Tensor:
            h = torch.addmm(b, t.to(W.device, dtype), W.T)
            return (h.relu_() if relu else act(h)) @ a + c

        return _chunked(f, x).to(x.device)


def _two_stage_skeleton(opts: TwoStageOptions, d: int) -> TwoStageProxy:
    return TwoStageProxy(d, opts.width, opts.activation)


def _random_biases(opts: TwoStageOptions, seed: int) -> torch.Tensor:
    g = _generator(seed)
    return (2 * torch.rand(opts.width, generator=g, dtype=torch.float64) - 1) * opts.bias_range


def _set_two_stage(model: TwoStageProxy, W, b, coef, ess1: float, ess2: float) -> TwoStageProxy:
    model.W.copy_(W.cpu())
    model.b.copy_(b.cpu())
    model.a.copy_(coef[:-1].cpu())
    model.c.fill_(float(coef[-1]))
    model.stage1_ess.fill_(ess1)
    model.stage2_ess.fill_(ess2)
    return model


def _train_two_stage(
    feature_data: TrainData, readout_data: TrainData, opts: TwoStageOptions, seed: int, device: torch.device,
    features: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> TwoStageProxy:
    """Stage 1 on ``feature_data`` (unless ``features=(W, b, ess)`` is given), stage 2 on ``readout_data``."""
    s_w, s_b = _child_seeds(seed, 2)
    if features is None:
        x1, y1 = feature_data.as_pointwise()
        W, ess1 = fit_stage1(x1.to(device), y1.to(device), opts, s_w)
        b = _random_biases(opts, s_b).to(device)
    else:
        W, b, ess1 = features
        W, b = W.to(device), b.to(device)
    x2, y2 = readout_data.as_pointwise()
    coef, ess2 = fit_stage2(x2.to(device), y2.to(device), W, b, opts)
    return _set_two_stage(_two_stage_skeleton(opts, feature_data.d), W, b, coef, ess1, ess2)


def _build_two_stage(opts: TwoStageOptions, ctx: ProxyContext) -> Proxy:
    data = TrainData.from_context(ctx)
    device = resolve_device(opts.device)
    with single_threaded(device):
        return _train_two_stage(data, data, opts, ctx.seed, device)


# --------------------------------------------------------------------------- ensemble

AGGREGATORS = ("mean", "min", "uwo", "median", "mean_minus_std")
DIVERSITY = ("init", "bootstrap", "independent_features", "shared_features")
MEMBER_KINDS = ("mlp", "two_stage", "linear")
_MEMBER_NORM_CANDIDATES = 1 << 16


def _freeze_mapping(value: Any, name: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        value = value.items()
    try:
        items = tuple(sorted((str(k), v) for k, v in value))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a mapping of option names to values (got {value!r}).") from None
    return items


@dataclass(frozen=True)
class EnsembleOptions:
    """Options of the ``ensemble`` proxy (Coste et al. 2024; Eisenstein et al. 2023)."""

    k: int = _opt(5, "Number of members (>= 2).")
    member: str = _opt("mlp", f"Member kind, one of {list(MEMBER_KINDS)}.")
    member_kwargs: Any = _opt((), "Options of every member (a mapping; validated like the member's own proxy_kwargs).")
    diversity: str = _opt(
        "bootstrap",
        f"Diversity source, one of {list(DIVERSITY)}: 'init' = own seed, all labels; 'bootstrap' = own seed and "
        "own bootstrap resample; 'independent_features' = own first layer learned on an own resample, readout "
        "refit on all labels; 'shared_features' = one first layer (all labels) shared, readouts refit with own "
        "seeds on own resamples.",
    )
    aggregator: str = _opt(
        "mean", f"How member rewards combine, one of {list(AGGREGATORS)}: min = worst-case (WCO), "
                "uwo = mean − λ·population variance, mean_minus_std = mean − λ·population std.",
    )
    lam: float = _opt(1.0, "λ of 'uwo' and 'mean_minus_std' (>= 0).")
    device: str = _opt("auto", "Training device for every member: 'auto', 'cpu' or 'cuda'.")

    def __post_init__(self) -> None:
        _set(self, "k", check_int(_name("k"), self.k, low=2, high=1024))
        check_choice(_name("member"), self.member, MEMBER_KINDS)
        kw = _freeze_mapping(self.member_kwargs, _name("member_kwargs"))
        if "device" in dict(kw):
            raise ValueError(f"set the device with {_name('device')}, not inside {_name('member_kwargs')}.")
        _set(self, "member_kwargs", kw)
        self.member_options  # validate the member's options now (errors name the member's option)
        check_choice(_name("diversity"), self.diversity, DIVERSITY)
        if self.member == "linear" and self.diversity in ("init", "independent_features"):
            raise ValueError(
                f"{_name('diversity')}={self.diversity!r} gives identical members for member='linear' (a convex fit "
                "with no initialization or first layer); use 'bootstrap' or 'shared_features', or a member with "
                "features ('mlp', 'two_stage')."
            )
        check_choice(_name("aggregator"), self.aggregator, AGGREGATORS)
        _set(self, "lam", check_float(_name("lam"), self.lam, low=0.0))
        check_choice(_name("device"), self.device, DEVICE_CHOICES)

    @property
    def member_options(self) -> Any:
        kw = dict(self.member_kwargs)
        if self.member != "linear":
            kw["device"] = self.device
        try:
            return parse_options(self.member, kw)
        except (TypeError, ValueError) as err:
            raise type(err)(f"in {_name('member_kwargs')} of the ensemble: {err}") from None


def aggregate(values: torch.Tensor, aggregator: str, lam: float = 1.0) -> torch.Tensor:
    """Combine member rewards ``values`` of shape (k, ...) over the first axis.

    ``mean``; ``min`` (worst-case optimization, Coste et al.); ``uwo`` = mean − λ·Var (population
    variance, uncertainty-weighted optimization); ``median`` (mean of the two middle values for even
    k); ``mean_minus_std`` = mean − λ·std (population).
    """
    check_choice("aggregator", aggregator, AGGREGATORS)
    if aggregator == "mean":
        return values.mean(0)
    if aggregator == "min":
        return values.amin(0)
    if aggregator == "median":
        s = values.sort(0).values
        k = s.shape[0]
        return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])
    var = values.var(0, unbiased=False)
    if aggregator == "uwo":
        return values.mean(0) - lam * var
    return values.mean(0) - lam * var.sqrt()


#: Candidates per chunk of :func:`stacked_mlp_raw`, shared by the k members (measured on one CPU thread,
#: k = 5, width 64: 2048-16384 rows are within noise of each other; 1.25x faster than a loop over members).
_STACKED_ROWS = 1 << 12


def _inplace_relu(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min_(0.0)


def _stackable_mlps(members: list[Proxy]) -> bool:
    """True when every member is an :class:`MLPProxy` of one architecture on one device (batched scoring)."""
    if not members or not all(type(m) is MLPProxy for m in members):
        return False
    m0 = members[0]
    shapes = [tuple(p.shape) for p in m0.parameters()]
    return all(m.activation == m0.activation and [tuple(p.shape) for p in m.parameters()] == shapes
               and m.readout.weight.device == m0.readout.weight.device for m in members)


def stacked_mlp_raw(members: list[MLPProxy], x: torch.Tensor) -> torch.Tensor:
    """Raw scores of k same-architecture MLPs in one batched forward: (..., d) -> (k, ...) float32.

    The first layers of all members are one (k·width, d) weight matrix (one ``addmm`` per chunk of
    candidates, shared by every member); the deeper layers are ``baddbmm`` over the stacked (k, out, in)
    weights. Equal to ``torch.stack([m.raw(x) for m in members])`` up to float32 rounding of the kernels.
    """
    k = len(members)
    linears = [[m for m in mm.features if isinstance(m, torch.nn.Linear)] + [mm.readout] for mm in members]
    p = members[0].readout.weight
    act = _inplace_relu if members[0].activation == "relu" else ACTIVATIONS[members[0].activation]
    W1 = torch.cat([ls[0].weight for ls in linears]).t()  # (d, k·width)
    b1 = torch.cat([ls[0].bias for ls in linears])
    width = linears[0][0].out_features
    rest = [(torch.stack([ls[j].weight for ls in linears]).transpose(1, 2),  # (k, in, out)
             torch.stack([ls[j].bias for ls in linears]).unsqueeze(1)) for j in range(1, len(linears[0]))]
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    out = torch.empty((k, flat.shape[0]), dtype=p.dtype, device=p.device)
    rows = max(1, _STACKED_ROWS // k)
    for i in range(0, flat.shape[0], rows):
        t = flat[i:i + rows].to(p.device, p.dtype)
        h = act(torch.addmm(b1, t, W1)).reshape(t.shape[0], k, width).transpose(0, 1)  # (k, n, width)
        for W, b in rest[:-1]:
            h = act(torch.baddbmm(b, h, W))
        W, b = rest[-1]
        out[:, i:i + rows] = torch.baddbmm(b, h, W).squeeze(-1)
    return out.reshape(k, *lead).to(x.device)


def member_raw(members: list[Proxy], x: torch.Tensor) -> torch.Tensor:
    """Raw (unnormalized) scores of every member, (..., d) -> (k, ...): one batched forward for MLP members."""
    with torch.no_grad():
        if _stackable_mlps(list(members)):
            return stacked_mlp_raw(list(members), x)
        return torch.stack([m.raw(x) for m in members])


class EnsembleProxy(Proxy):
    """Members (each normalized under π_ref) combined by an aggregator."""

    kind = "ensemble"

    def __init__(self, members: list[Proxy], aggregator: str, lam: float) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.aggregator = check_choice("aggregator", aggregator, AGGREGATORS)
        self.lam = float(lam)

    def member_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (k, ...) normalized member rewards (MLP members scored in one batched forward)."""
        members = list(self.members)
        if not _stackable_mlps(members):
            return torch.stack([m(x).to(torch.float64) for m in members])
        r = member_raw(members, x)  # float32, as each member's own forward computes it
        view = (-1,) + (1,) * (r.dim() - 1)
        shift = torch.stack([m.shift for m in members]).to(r.device, r.dtype).view(view)
        scale = torch.stack([m.scale for m in members]).to(r.device, r.dtype).view(view)
        return ((r - shift) / scale).to(torch.float64)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        out = aggregate(self.member_rewards(x), self.aggregator, self.lam)
        return out.to(x.dtype if x.is_floating_point() else torch.float64)

    def with_aggregator(self, aggregator: str, lam: float | None = None) -> "EnsembleProxy":
        """A copy sharing the members, with another aggregator (normalization reset to identity)."""
        return EnsembleProxy(list(self.members), aggregator, self.lam if lam is None else lam)


def _normalize_members(members: list[Proxy], ctx: ProxyContext, seed: int) -> None:
    """Centre/scale every member under π_ref pooled over contexts (the world's rule) on one private sample.

    The members are scored together (:func:`member_raw`); each gets its own π_ref-weighted mean and
    standard deviation.
    """
    if ctx.sample_ref is None:
        raise ValueError("an ensemble needs ProxyContext.sample_ref to normalize its members under π_ref.")
    n_ctx = max(64, _MEMBER_NORM_CANDIDATES // max(1, _context_size(ctx)))
    cand, ref_logp = ctx.sample_ref(n_ctx, _generator(seed))
    r = member_raw(members, cand).to(torch.float64)  # (k, C, K)
    p = ref_logp.to(torch.float64).exp()
    mean = (p * r).sum(-1).mean(-1)  # (k,)
    var = (p * (r - mean[:, None, None]) ** 2).sum(-1).mean(-1)
    for m, mu, v in zip(members, mean.tolist(), var.tolist()):
        m.set_normalization(mu, max(math.sqrt(v), 1e-12))


def _context_size(ctx: ProxyContext) -> int:
    cand, _ = ctx.sample_ref(1, _generator(0))
    return int(cand.shape[1])


def _member_skeleton(opts: EnsembleOptions, d: int) -> Proxy:
    mo = opts.member_options
    if opts.member == "mlp":
        return _mlp_skeleton(mo, d)
    if opts.member == "two_stage":
        return _two_stage_skeleton(mo, d)
    return LinearProxy(torch.zeros(d, dtype=torch.float64))


def _ensemble_skeleton(opts: EnsembleOptions, d: int) -> EnsembleProxy:
    return EnsembleProxy([_member_skeleton(opts, d) for _ in range(opts.k)], opts.aggregator, opts.lam)


def _fit_linear_member(data: TrainData, l2: Any) -> Proxy:
    if data.kind == "pairwise":
        zeros = torch.zeros(len(data))
        prefs = PreferenceData(data.x_a, data.x_b, data.label, zeros, zeros)
        ctx = ProxyContext(data.d, None, None, None, 1.0, prefs, None, 0, torch.device("cpu"))
    else:
        pts = PointwiseData(data.x, data.y, torch.zeros(len(data)))
        ctx = ProxyContext(data.d, None, None, None, 1.0, None, pts, 0, torch.device("cpu"))
    return _build_linear(l2, ctx)


def _build_ensemble(opts: EnsembleOptions, ctx: ProxyContext) -> Proxy:
    with single_threaded(resolve_device(opts.device)):
        return _build_ensemble_members(opts, ctx)


def _build_ensemble_members(opts: EnsembleOptions, ctx: ProxyContext) -> EnsembleProxy:
    data = TrainData.from_context(ctx)
    mo = opts.member_options
    device = resolve_device(opts.device)
    seeds = _child_seeds(ctx.seed, opts.k + 1)
    member_seeds, norm_seed = seeds[:-1], seeds[-1]
    resample = lambda s: data.bootstrap(_generator(s + 7))  # noqa: E731
    members: list[Proxy] = []
    shared = None
    if opts.diversity == "shared_features":
        if opts.member == "mlp":
            shared = _mlp_skeleton(mo, ctx.d)
            shared.init_parameters(_generator(member_seeds[0]))
            shared = train_mlp(shared, data, mo, member_seeds[0] + 1, device)
        elif opts.member == "two_stage":
            base = _train_two_stage(data, data, mo, member_seeds[0], device)
            shared = (base.W.clone(), base.b.clone(), float(base.stage1_ess))
    owns = [data if opts.diversity == "init" else resample(s) for s in member_seeds]
    if opts.member == "mlp":
        # all members train together (batched weights), each on its own labels and minibatch order
        models = []
        for s in member_seeds:
            m = _mlp_skeleton(mo, ctx.d)
            if opts.diversity == "shared_features":
                m.load_state_dict(shared.state_dict())
                m.init_parameters(_generator(s), readout_only=True)
            else:
                m.init_parameters(_generator(s))
            models.append(m)
        seeds1 = [s + 1 for s in member_seeds]
        members = train_mlps(models, owns, mo, seeds1, device, readout_only=opts.diversity == "shared_features")
        if opts.diversity == "independent_features":
            members = train_mlps(members, [data] * opts.k, mo, [s + 2 for s in member_seeds], device,
                                 readout_only=True)
    else:
        for s, own in zip(member_seeds, owns):
            if opts.member == "linear":
                m = _fit_linear_member(own, mo)
            elif opts.diversity == "shared_features":
                m = _train_two_stage(data, own, mo, s, device, features=shared)
            elif opts.diversity == "independent_features":
                m = _train_two_stage(own, data, mo, s, device)
            else:
                m = _train_two_stage(own, own, mo, s, device)
            members.append(m)
    _normalize_members(members, ctx, norm_seed)
    return EnsembleProxy(members, opts.aggregator, opts.lam)


# --------------------------------------------------------------------------- parametric (controlled errors)


@dataclass(frozen=True)
class ParametricOptions:
    """Options of the ``parametric`` proxy: ``r̂(x) = σ_p(κ s) + δ·s + Σ_p h_p exp(-(s − c_p)²/(2 w_p²))``.

    ``s = <w, x>`` with the unit direction ``w = cos φ θ* + sin φ θ⊥`` (θ⊥ ⟂ θ* drawn from the
    proxy_init stream). Pockets are slabs of the proxy's own index ``s`` (= the gold index when φ = 0).
    """

    angle: float = _opt(0.0, "Angle φ in degrees ([0, 180]) between the proxy direction w and θ*.")
    link: str = _opt("", f"Proxy link σ_p, one of {sorted(LINKS)}; '' = the gold's link.")
    link_mix: float = _opt(0.0, "δ of the added linear term δ·s (link distortion; e.g. makes the hump monotone).")
    pockets: Any = _opt((), "Error pockets: a sequence of (center, width, height) along s; heights in units of the "
                            "link's standard deviation. High-s pockets are harmful to tilted policies, low-s benign.")
    index_scale: float = _opt(1.0, "κ > 0: the link is applied to κ·s. With link 'tanh' a large κ squashes the proxy "
                                   "toward sign(s) while it still ranks exactly like s (an accurate squashed proxy; after the pooled "
                                   "normalization its per-context variance does not drop, see docs/results.md §2).")

    def __post_init__(self) -> None:
        _set(self, "angle", check_float(_name("angle"), self.angle, low=0.0, high=180.0))
        if self.link != "":
            check_choice(_name("link"), self.link, sorted(LINKS))
        _set(self, "link_mix", check_float(_name("link_mix"), self.link_mix))
        _set(self, "index_scale", check_float(_name("index_scale"), self.index_scale, low=0.0, low_open=True))
        pockets = []
        try:
            items = list(self.pockets or ())
        except TypeError:
            raise TypeError(f"{_name('pockets')} must be a sequence of (center, width, height) triples "
                            f"(got {self.pockets!r}).") from None
        for i, p in enumerate(items):
            try:
                c, w, h = p
            except (TypeError, ValueError):
                raise TypeError(f"{_name('pockets')}[{i}] must be a (center, width, height) triple (got {p!r}).") from None
            pockets.append((
                check_float(f"{_name('pockets')}[{i}] center", c),
                check_float(f"{_name('pockets')}[{i}] width", w, low=0.0, low_open=True),
                check_float(f"{_name('pockets')}[{i}] height", h),
            ))
        _set(self, "pockets", tuple(pockets))


class ParametricProxy(Proxy):
    """Single-index proxy with controlled errors (see :class:`ParametricOptions`)."""

    kind = "parametric"

    def __init__(self, w: torch.Tensor, link_name: str, link_mix: float, pockets: tuple,
                 index_scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("w", w.to(torch.float64).clone())
        self.index_scale = float(index_scale)
        self.link_name = link_name
        self.link_mix = float(link_mix)
        self.pockets = tuple(pockets)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        s = x.to(torch.float64) @ self.w.to(x.device)
        r = LINKS[self.link_name](self.index_scale * s) + self.link_mix * s
        for c, w, h in self.pockets:
            r = r + h * torch.exp(-0.5 * ((s - c) / w) ** 2)
        return r.to(x.dtype if x.is_floating_point() else torch.float64)


def _build_parametric(opts: ParametricOptions, ctx: ProxyContext) -> Proxy:
    theta = ctx.theta.to(torch.float64)
    rng = np.random.default_rng(ctx.seed)
    perp = torch.from_numpy(rng.standard_normal(ctx.d))
    perp = perp - (perp @ theta) * theta
    if ctx.d == 1 or float(perp.norm()) == 0.0:
        if opts.angle not in (0.0, 180.0):
            raise ValueError(f"{_name('angle')}={opts.angle:g} needs d >= 2 (got d={ctx.d}).")
        perp = torch.zeros_like(theta)
    else:
        perp = perp / perp.norm()
    phi = math.radians(opts.angle)
    w = math.cos(phi) * theta + math.sin(phi) * perp
    link_name = opts.link or _link_name_of(ctx.link)
    return ParametricProxy(w / w.norm(), link_name, opts.link_mix, opts.pockets, opts.index_scale)


def _link_name_of(link: Any) -> str:
    name = getattr(link, "name", None)
    if name in LINKS:
        return name
    raise ValueError("proxy 'parametric' with link='' needs the gold link to be a registered tiltenv link.")


# --------------------------------------------------------------------------- registration

register_proxy(ProxySpec(
    "mlp", MLPOptions, _build_mlp, description="Bradley–Terry MLP reward model (AdamW on the BT NLL).",
    skeleton=_mlp_skeleton,
))
register_proxy(ProxySpec(
    "two_stage", TwoStageOptions, _build_two_stage,
    description="Wachi et al. 2026 two-stage model: reward-weighted one-step features + weighted ridge readout.",
    skeleton=_two_stage_skeleton,
))
register_proxy(ProxySpec(
    "ensemble", EnsembleOptions, _build_ensemble,
    description="Ensemble of learned proxies with a diversity source and an aggregator (mean/min/uwo/median/mean_minus_std).",
    skeleton=_ensemble_skeleton, cache_ignore=("aggregator", "lam"),
))
register_proxy(ProxySpec(
    "parametric", ParametricOptions, _build_parametric, needs_labels=False,
    description="Controlled-error proxy: direction at an angle to θ*, link distortion, error pockets (oracle control).",
))
