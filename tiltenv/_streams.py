"""The task seed's named random streams (below the worlds' configs and builders, which both use them)."""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "seed_streams", "TOKEN_STREAMS", "token_seed_streams"]

#: Names of the independent random streams spawned from the task seed, in spawn order (append only:
#: reordering changes every task and needs a version bump of every env id).
STREAMS = ("theta", "directions", "labels", "label_contexts", "proxy_init", "norm_contexts", "eval_contexts",
           "ai_labeler", "monitor_labels", "channel_labels", "family")


#: Named random streams of a token task (:mod:`tiltenv.worlds.tokens`), in spawn order (append only).
TOKEN_STREAMS = ("theta", "ref_model", "features", "label_prompts", "labels", "proxy_init", "norm_prompts",
                 "eval_prompts", "family", "sequence_proxy")


def _spawn(names: tuple[str, ...], seed: int) -> dict[str, int]:
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(2, np.uint64)[0] >> np.uint64(1)) for name, child in zip(names, children)}


def seed_streams(seed: int) -> dict[str, int]:
    """One 63-bit integer seed per named stream, from ``SeedSequence(seed).spawn``."""
    return _spawn(STREAMS, seed)


def token_seed_streams(seed: int) -> dict[str, int]:
    """One 63-bit seed per named stream of a token task (the rule of :func:`seed_streams`)."""
    return _spawn(TOKEN_STREAMS, seed)
