"""Issue 20: the sequence-native reward model (``proxy="transformer"``) and hidden gold families on token worlds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tiltenv import make_world
from tiltenv import metrics as M
from tiltenv.rewards import proxy_cache
from tiltenv.worlds.tokens import TokenConfig, all_responses
from tiltenv.worlds.tokens.reward_model import TransformerOptions, TransformerProxy, is_sequence_proxy
from tiltenv.worlds.tokens.world import TOKEN_STREAMS, token_seed_streams

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
def test_dev_token_worlds_are_bit_identical_to_before(kwargs, digest, values, monkeypatch):
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "0")  # trained here, not an entry cached before a change
    cfg = TokenConfig(**kwargs)
    assert cfg.digest() == digest  # the dev config's digest (cache and result keys) is unchanged
    assert _fingerprint(make_world(cfg, fresh=True)) == values


# --------------------------------------------------------------------------- the transformer proxy

TF = dict(V=4, L=3, n_labels=1000, n_eval_contexts=16, n_norm_contexts=16, proxy="transformer")


@pytest.fixture(scope="module")
def tf_world():
    return make_world(TokenConfig(**TF, flip_rate=0.1, seed=3))


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "0")


def test_streams_are_appended_only():
    assert TOKEN_STREAMS[:8] == ("theta", "ref_model", "features", "label_prompts", "labels", "proxy_init",
                                 "norm_prompts", "eval_prompts")
    old = np.random.SeedSequence(7).spawn(8)
    s = token_seed_streams(7)
    assert [s[n] for n in TOKEN_STREAMS[:8]] == [int(c.generate_state(2, np.uint64)[0] >> np.uint64(1)) for c in old]


def test_transformer_learns_the_gold_from_token_pairs(tf_world):
    """Held-out π_ref pairs (all responses of unseen prompts, weighted by π_ref): far above chance, and within a few
    points of the labels' own accuracy (10% flips: ≈ 0.90 on the training pairs; 0.87 here, 0.89 and 0.93 at
    seeds 4 and 5)."""
    j, t = tf_world.judge, tf_world.task
    acc = M.ranking_accuracy(j.eval_proxy, j.eval_gold, j.eval_ref_logp)
    tp = t.token_preferences
    ga, gb = (j.gold(t.features(tp["prompts"], tp[k])) for k in ("a", "b"))
    labels_acc = float(((ga > gb).float() == tp["label"])[ga != gb].float().mean())
    assert 0.85 < labels_acc < 0.95
    assert acc > 0.8 and acc > labels_acc - 0.06, (acc, labels_acc)
    corr = float(np.corrcoef(j.eval_proxy.flatten().numpy(), j.eval_gold.flatten().numpy())[0, 1])
    assert corr > 0.6, corr
    # normalized under π_ref like every proxy: mean 0, variance 1 over the (different) normalization prompts
    assert abs(M.policy_value(j.eval_ref_logp, j.eval_proxy)) < 0.5
    assert 0.5 < M.reward_variance(j.eval_ref_logp, j.eval_proxy) < 2.0


def test_an_untrained_transformer_does_not_rank(tf_world):
    """The accuracy above comes from training: the same architecture at its initialization is near chance."""
    j = tf_world.judge
    model = TransformerProxy(TransformerOptions(), 4, 4, 3)
    model.init_parameters(torch.Generator().manual_seed(0))
    acc = M.ranking_accuracy(model.score_all(j.eval_prompts), j.eval_gold, j.eval_ref_logp)
    assert abs(acc - 0.5) < 0.2, acc


def test_tree_scores_equal_the_full_causal_forward_and_task_reward(tf_world):
    task, j = tf_world.task, tf_world.judge
    ys = all_responses(4, 3)
    p = j.eval_prompts[:3]
    rep = p.repeat_interleave(ys.shape[0], 0)
    direct = task.reward(rep, ys.repeat(3, 1), count=False).reshape(3, -1)
    assert direct.dtype == torch.float64
    assert torch.allclose(direct, j.eval_proxy[:3], atol=1e-5, rtol=0)
    assert task.proxy.kind == "transformer" and is_sequence_proxy(task.proxy)


def test_transformer_world_is_bit_identical_under_its_seed(no_cache):
    a, b = make_world(TokenConfig(**TF, seed=4), fresh=True), make_world(TokenConfig(**TF, seed=4), fresh=True)
    assert torch.equal(a.judge.eval_proxy, b.judge.eval_proxy)
    c = make_world(TokenConfig(**TF, seed=5), fresh=True)
    assert not torch.equal(a.judge.eval_proxy, c.judge.eval_proxy)
    # the other streams do not move when the sequence proxy is asked for: same labels, gold and π_ref as the
    # linear world of the same seed
    lin = make_world(TokenConfig(**{**TF, "proxy": "linear"}, seed=4))
    assert torch.equal(lin.judge.eval_gold, a.judge.eval_gold)
    assert torch.equal(lin.task.token_preferences["label"], a.task.token_preferences["label"])


def test_transformer_is_cached_and_its_key_holds_its_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "1")
    cfg = TokenConfig(**{**TF, "n_labels": 300}, seed=6)
    before = dict(proxy_cache.stats)
    first = make_world(cfg, fresh=True)
    second = make_world(cfg, fresh=True)
    assert proxy_cache.stats["misses"] - before["misses"] == 1 and proxy_cache.stats["hits"] - before["hits"] == 1
    assert torch.equal(first.judge.eval_proxy, second.judge.eval_proxy)  # the cached proxy is the trained one
    assert first.task.proxy is not second.task.proxy
    assert len(list((tmp_path / "proxies").glob("transformer-*.pt"))) == 1
    make_world(cfg.replace(proxy_kwargs={"lr": 1e-3}), fresh=True)  # an option changes the proxy: a new entry
    make_world(cfg.replace(V=5), fresh=True)  # so does the world (its architecture, its labels)
    make_world(cfg.replace(gold_family=True), fresh=True)  # and a drawn member (other labels)
    assert len(list((tmp_path / "proxies").glob("transformer-*.pt"))) == 4


def test_env_and_token_rloo_train_against_the_transformer(tf_world):
    from baselines import TokenPG, TokenPGConfig

    env = gym.make("tiltenv/Tokens-v0", **{**TF, "n_labels": 300}, seed=3)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        total, done = total + r, term or trunc
    task = env.unwrapped.task
    expect = task.reward(torch.as_tensor(obs["prompt"])[None], torch.as_tensor(obs["tokens"])[None], count=False)
    assert is_sequence_proxy(task.proxy) and total == pytest.approx(float(expect[0]), abs=1e-6)
    env.close()

    j = tf_world.judge
    ref = j.evaluate(tf_world.task.ref_model)
    agent = TokenPG(TokenPGConfig(algorithm="rloo", learning_rate=0.03, seed=0)).fit(tf_world.task, proxy_queries=4096)
    res = j.evaluate(agent.model)
    assert res["proxy_value"] > ref["proxy_value"] + 0.3, (ref["proxy_value"], res["proxy_value"])
    assert res["gold_value"] > ref["gold_value"]  # a learned reward model that ranks: the gold rises too
    assert tf_world.task.budget.proxy_queries >= 4000  # the queries went through the task's counted interface


def test_the_bandit_view_of_a_transformer_task_says_why_it_cannot_score_features(tf_world):
    x, _ = tf_world.task.sample_contexts(1, seed=0)
    with pytest.raises(ValueError, match="scores token sequences, not φ features: use task.reward"):
        tf_world.task.proxy_reward(x)


def test_transformer_option_and_kind_errors():
    from tiltenv.worlds.config import TaskConfig
    from tiltenv.worlds.multiobjective import MultiObjectiveConfig

    with pytest.raises(TypeError, match=r"unknown option 'epochz' for proxy 'transformer'; valid options are \['d_model'"
                                        r".*Did you mean 'epochs'\?"):
        TokenConfig(proxy="transformer", proxy_kwargs={"epochz": 3})
    with pytest.raises(ValueError, match=r"n_heads'\]=3 must divide .*d_model'\]=32; valid: \[1, 2, 4, 8, 16, 32\]"):
        TokenConfig(proxy="transformer", proxy_kwargs={"n_heads": 3})
    with pytest.raises(ValueError, match=r"proxy_kwargs\['d_model'\]"):
        TokenConfig(proxy="transformer", proxy_kwargs={"d_model": 0})
    with pytest.raises(ValueError, match=r"proxy must be one of \[.*'transformer', 'two_stage'\] \(got 'transformr'\)"
                                         r"\. Did you mean 'transformer'\?"):
        TokenConfig(proxy="transformr")
    for make in (lambda: TaskConfig(proxy="transformer"), lambda: MultiObjectiveConfig(proxy="transformer"),
                 lambda: gym.make("tiltenv/Hump-v0", proxy="transformer")):
        with pytest.raises(ValueError, match=r"proxy 'transformer' scores token sequences and exists only on token "
                                             r"tasks .*must be one of \['ensemble', 'gold', 'linear', 'mlp', "
                                             r"'parametric', 'two_stage'\]\.$"):
            make()
    with pytest.raises(ValueError, match=r"'transformer' proxy would take about .* h .*Lower epochs, batch_size, "
                                         r"d_model, d_ff, n_layers or n_labels"):
        TokenConfig(proxy="transformer", proxy_kwargs={"epochs": 10**6})


def test_transformer_cost_estimate_grows_with_every_knob():
    from tiltenv._cost import proxy_seconds

    def est(**kw):
        size = dict(d=16, n_labels=kw.pop("n_labels", 2000), label_kind="pairwise", seq_len=kw.pop("T", 8))
        return proxy_seconds("transformer", TransformerOptions(**kw), **size)

    base = est()
    assert 0.5 < base < 20  # the default on the reference CPU (measured ≈ 2.5 s: tiltenv/_cost.py)
    for kw in (dict(epochs=40), dict(d_model=64), dict(d_ff=256), dict(n_layers=2), dict(n_labels=4000), dict(T=16),
               dict(batch_size=32)):
        assert est(**kw) > base, kw


# --------------------------------------------------------------------------- hidden gold families


def test_gold_family_draws_a_hidden_member_from_its_own_stream():
    dev = TokenConfig(V=4, L=3, n_labels=200, n_eval_contexts=8, n_norm_contexts=8, link="hump", seed=11)
    test = dev.replace(gold_family=True)
    m = test.member()
    assert m.params and set(m.params) == {"asymmetry", "peak", "sharpness"} and test.family().name == "hump"
    assert dev.member().params == {} and dev.family() is None
    assert "gold_family" not in dev.to_dict() and test.to_dict()["gold_family"] is True
    assert dev.digest() != test.digest()
    assert test.public() == dev.replace(seed=12, gold_family=True).public()  # the public view shows no member
    with pytest.raises(ValueError, match="hides its gold member"):
        test.public().member()
    wd, wt = make_world(dev), make_world(test)
    assert wt.judge.extras["member"].spec() == m.spec() and wd.judge.extras["member"].params == {}
    # same θ*, π_ref, features and prompts (other streams); another gold and other labels
    assert torch.equal(wd.judge.theta, wt.judge.theta) and torch.equal(wd.judge.eval_ref_logp, wt.judge.eval_ref_logp)
    assert not torch.allclose(wd.judge.eval_gold, wt.judge.eval_gold, atol=1e-3)
    with pytest.raises(Exception, match="gold_family must be True or False"):
        TokenConfig(gold_family="yes")


def test_gym_spec_of_tokens_has_a_gold_family():
    from leaderboard.suites import has_gold_family

    assert has_gold_family("tiltenv/Tokens-v0")
    env = gym.make("tiltenv/Tokens-v0", V=4, L=2, n_labels=50, n_eval_contexts=4, n_norm_contexts=4, gold_family=True,
                   seed=3)
    assert env.unwrapped.config.gold_family and env.unwrapped.config.member().params
    env.close()


def test_transformer_training_batch_is_memory_checked_before_it_is_built():
    from tiltenv.worlds.tokens.reward_model import train_transformer

    n = 3_000_000  # a full batch of 3M pairs: ~70 GB of activations; the views below allocate nothing
    prefs = {"prompts": torch.zeros(1, 4, dtype=torch.int64).expand(n, 4),
             "a": torch.zeros(1, 3, dtype=torch.int64).expand(n, 3),
             "b": torch.zeros(1, 3, dtype=torch.int64).expand(n, 3), "label": torch.zeros(1).expand(n)}
    opts = TransformerOptions(batch_size=0, epochs=1)
    with pytest.raises(ValueError, match=r"training the transformer proxy would need about .* GiB .*batch_size "
                                         r"3000000 .*lower proxy_kwargs\['batch_size'\]"):
        train_transformer(TransformerProxy(opts, 4, 4, 3), prefs, opts, seed=0)
