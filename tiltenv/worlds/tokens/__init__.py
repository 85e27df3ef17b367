"""Token sequences: exact-gold RLHF for autoregressive policies (``tiltenv/Tokens-v0``, issue 20).

A prompt ``c`` of ``prompt_len`` tokens, a response ``y = (y_1 … y_L)`` over ``V`` tokens; π_ref a small GRU
language model drawn from the seed; gold ``r*(c, y) = a σ*(<θ*, φ(c, y)>)`` on public features. With small V and
L every one of the V^L responses of a prompt is enumerated (:func:`tree_logp`, level by level over the prefix
tree), so every exact metric of :mod:`tiltenv.metrics` holds for token-level policies with K = V^L.

Example:
    >>> from tiltenv import make_world
    >>> from tiltenv.worlds.tokens import TokenConfig
    >>> world = make_world(TokenConfig(V=4, L=3, n_labels=200, n_eval_contexts=8, n_norm_contexts=8))
    >>> policy = world.task.make_policy()               # a trainable GRU initialized at π_ref
    >>> res = world.judge.evaluate(policy)              # exact over all 4^3 responses of 8 prompts
    >>> round(res["kl"], 12), res["gold_value"] == res["ref_gold_value"]
    (0.0, True)
"""

from tiltenv.worlds.tokens.config import MAX_RESPONSES, TokenConfig
from tiltenv.worlds.tokens.model import ARModel, Featurizer, PrefixPolicy, check_sequence_policy
from tiltenv.worlds.tokens.tree import (TablePolicy, all_responses, response_index, sample_responses, sequence_logp, token_logp,
                                 tree_logp)
from tiltenv.worlds.tokens.reward_model import TransformerOptions, TransformerProxy
from tiltenv.worlds.tokens.world import TokenJudge, TokenSampler, TokenTask, build_token_world

__all__ = ["TokenConfig", "MAX_RESPONSES", "ARModel", "Featurizer", "PrefixPolicy", "check_sequence_policy",
           "all_responses", "response_index", "tree_logp", "TablePolicy", "token_logp", "sequence_logp", "sample_responses",
           "TokenTask", "TokenJudge", "TokenSampler", "build_token_world", "TransformerProxy", "TransformerOptions"]
