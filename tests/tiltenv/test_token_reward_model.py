"""Issue 20: the sequence-native reward model (``proxy="transformer"``) and hidden gold families on token worlds."""

from __future__ import annotations

import pytest
import torch

from tiltenv import make_world
from tiltenv.tokens import TokenConfig

#: Dev token worlds pinned before the transformer proxy and the gold families were added (appended streams only:
#: these worlds must stay bit-identical). Values: config digest, then eval_gold sum, eval_proxy sum, eval_ref_logp
#: sum, θ* sum, label sum, Σ token a, proxy shift, proxy scale, eval_proxy[0, 3] (float.hex).
PINNED = [
    (dict(V=4, L=3, n_labels=200, n_eval_contexts=8, n_norm_contexts=8), "48bdf0395953ad914928",
     ['-0x1.7fe86516fb9b0p+3', '0x1.8718eed780000p+4', '-0x1.646a8b448c56bp+11', '-0x1.207fe6e1df67ep+0',
      '0x1.b000000000000p+6', 743, '-0x1.257f833bf1665p-3', '0x1.0f30c6b017231p+1', '-0x1.b9a9c00000000p-2']),
    (dict(V=4, L=3, n_labels=300, n_eval_contexts=8, n_norm_contexts=8, link="hump", proxy="two_stage",
          label_temp=0.2, flip_rate=0.1, seed=5), "99bbef146c560b24fa8a",
     ['0x1.c80edaca751bbp+8', '0x1.35f632b662000p+6', '-0x1.57ad82f05a66dp+11', '0x1.5133a47ed7ae9p+0',
      '0x1.1200000000000p+7', 1037, '0x1.dfd1554c543d2p-8', '0x1.d18ad61f21150p-2', '0x1.130bee0000000p-1']),
]


def _fingerprint(world):
    j, t = world.judge, world.task
    return [float(j.eval_gold.sum()).hex(), float(j.eval_proxy.sum()).hex(), float(j.eval_ref_logp.sum()).hex(),
            float(j.theta.sum()).hex(), float(t.token_preferences["label"].sum()).hex(),
            int(t.token_preferences["a"].sum()), float(t.proxy.shift).hex(), float(t.proxy.scale).hex(),
            float(j.eval_proxy[0, 3]).hex()]


@pytest.mark.parametrize("kwargs,digest,values", PINNED)
def test_dev_token_worlds_are_bit_identical_to_before(kwargs, digest, values):
    cfg = TokenConfig(**kwargs)
    assert cfg.digest() == digest  # the dev config's digest (cache and result keys) is unchanged
    assert _fingerprint(make_world(cfg)) == values
