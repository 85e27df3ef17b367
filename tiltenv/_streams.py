"""The task seed's named random streams (below tiltenv.worlds.config and tiltenv.worlds.world, which both use them)."""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "seed_streams"]

#: Names of the independent random streams spawned from the task seed, in spawn order (append only:
#: reordering changes every task and needs a version bump of every env id).
STREAMS = ("theta", "directions", "labels", "label_contexts", "proxy_init", "norm_contexts", "eval_contexts",
           "ai_labeler", "monitor_labels", "channel_labels", "family")


def seed_streams(seed: int) -> dict[str, int]:
    """One 63-bit integer seed per named stream, from ``SeedSequence(seed).spawn``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(2, np.uint64)[0] >> np.uint64(1)) for name, child in zip(STREAMS, children)}
