"""The sandbox: real child processes on a small task; good runs are valid and bit-identical, every fault is
recorded with its reason, nothing secret reaches the child, and the scorer stays healthy."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines import BASELINES, TrainBudget
from leaderboard import sandbox
from leaderboard.sandbox import AgentOutcome, RemoteRewardModel, isolation, run_agent
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import EXAMPLES_DIR, load_submission
from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M
from tiltenv.worlds.evaluation import policy_logp

ROOT = Path(__file__).resolve().parents[2]
SEED = 11
BUDGET = TrainBudget(proxy_queries=2048, n_checkpoints=4)
LIMITS = Limits(wall_time=60, memory_mb=2048)
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def world():
    # ref_eta = 0: π_ref is uniform and its direction u (which would carry cos(α)·θ*) is not public
    return make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=SEED), fresh=True)


def run(world, sub, budget=BUDGET, limits=LIMITS, **kw) -> AgentOutcome:
    return run_agent(sub, world.task, budget, world.judge.eval_candidates, world.judge.eval_ref_logp, limits, **kw)


def write_agent(tmp_path, body: str, name: str = "agent.py", policy: str = "return torch.as_tensor(ref_logp)") -> str:
    """A submission file with ``fit`` = ``body`` (indented code with ``task, budget, checkpoint`` in scope)."""
    src = textwrap.dedent('''\
        import os, sys, json, gc, time
        import numpy as np
        import torch

        class Agent:
            def fit(self, task, budget, checkpoint):
        {body}
            def policy(self, candidates, ref_logp):
                {policy}

        def make_agent():
            return Agent()
        ''').format(body=textwrap.indent(textwrap.dedent(body), " " * 8), policy=policy)
    path = tmp_path / name
    path.write_text(src)
    return str(path)


def fails(world, tmp_path, body, reason, *, policy="return torch.as_tensor(ref_logp)", limits=LIMITS, budget=BUDGET, **kw):
    sub = load_submission(write_agent(tmp_path, body, policy=policy))
    with pytest.raises(SandboxFailure) as info:
        run(world, sub, budget, limits, **kw)
    assert info.value.reason == reason, info.value.detail
    return info.value.detail


def assert_valid(out: AgentOutcome, C=64, K=8):
    assert out.logps.dtype == np.float64 and out.logps.shape == (len(out.steps), C, K)
    assert np.all(np.abs(np.logaddexp.reduce(out.logps, axis=-1)) < 1e-9)
    assert not np.isnan(out.logps).any()


# ----------------------------------------------------------------------------------------------- good runs
@pytest.mark.parametrize("name", ["reinforce", "tilt", "dpo"])
def test_baseline_valid_and_bit_identical(world, name):
    sub = load_submission(name, config={"device": "cpu"})
    a, b = run(world, sub), run(world, sub)
    assert_valid(a)
    assert a.steps == b.steps and np.array_equal(a.logps, b.logps)
    assert a.proxy_queries == b.proxy_queries and a.deploy_queries == b.deploy_queries
    assert a.steps[0] == 0
    if name == "tilt":  # deploys: one proxy call per checkpoint over the eval contexts
        assert a.proxy_queries == 0 and a.deploy_queries == 64 * 8 * len(a.steps)


def test_budget_and_policy_match_in_process(world):
    """The parent's count equals what the baseline spends in-process, and the policies agree."""
    agent_cls, config_cls = BASELINES["reinforce"]
    task = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=SEED), fresh=True).task
    snaps = []
    agent = agent_cls(config_cls(device="cpu")).fit(task, BUDGET, lambda s, p: snaps.append((s, p)))
    out = run(world, load_submission("reinforce", config={"device": "cpu"}))
    assert out.proxy_queries == task.budget.proxy_queries == BUDGET.proxy_queries
    # the scorer keeps the checkpoints at its own marks (the agent reports more: its log-spaced points too)
    assert out.steps == [0, *BUDGET.checkpoint_marks()]
    assert set(out.steps) <= {s for s, _ in snaps} == set(agent.checkpoint_steps)
    first = {}
    for s, p in snaps:
        first.setdefault(s, p)
    for s, lp in zip(out.steps, out.logps):
        p = first[s] if s < out.steps[-1] else snaps[-1][1]
        ref = policy_logp(p, world.judge.eval_candidates, world.judge.eval_ref_logp).numpy()
        np.testing.assert_allclose(lp, ref, atol=1e-6)


def test_example_agent_learns(world):
    out = run(world, load_submission(str(EXAMPLES_DIR / "reinforce_agent.py")), TrainBudget(proxy_queries=8192, n_checkpoints=4))
    assert_valid(out)
    j = world.judge
    scores = [M.normalized_score(torch.from_numpy(lp), j.eval_ref_logp, j.eval_gold, j.config.beta) for lp in out.logps]
    assert abs(scores[0]) < 1e-9  # w = 0 is π_ref
    assert scores[-1] > 0.2, scores
    assert out.proxy_queries <= 8192


# ----------------------------------------------------------------------------------------------- faults
def test_raises(world, tmp_path):
    detail = fails(world, tmp_path, "raise ValueError('boom 42')", "error")
    assert "ValueError: boom 42" in detail and "[fit]" in detail


def test_load_failure(world, tmp_path):
    path = tmp_path / "bad_import.py"
    path.write_text("import no_such_module_xyz\ndef make_agent():\n    pass\n")
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(str(path)))
    assert info.value.reason == "load" and "no_such_module_xyz" in info.value.detail


def test_hang_is_killed_at_the_wall_time_limit(world, tmp_path):
    started = time.monotonic()
    detail = fails(world, tmp_path, "time.sleep(600)", "timeout", limits=Limits(wall_time=3, memory_mb=2048))
    assert time.monotonic() - started < 10 and "3 s" in detail


@pytest.mark.parametrize("policy, words", [
    ("return torch.full(ref_logp.shape, float('nan'))", "NaN"),
    ("out = torch.as_tensor(ref_logp).clone(); out[0, 1] = float('inf'); return out", "+inf"),
    ("return torch.as_tensor(ref_logp)[:, :-1]", "shape (64, 7)"),
    ("return torch.as_tensor(ref_logp).exp()", "not normalized"),
    ("return torch.zeros(ref_logp.shape, dtype=torch.int64)", "dtype int64"),
    ("return np.zeros(ref_logp.shape, dtype=np.float16)", "dtype float16"),
    ("return [[0.0] * 8] * 64", "not normalized"),
])
def test_invalid_outputs(world, tmp_path, policy, words):
    detail = fails(world, tmp_path, "checkpoint(0, self)", "invalid_output", policy=policy)
    assert words in detail, detail


def test_memory_limit_rlimit(world, tmp_path):
    detail = fails(world, tmp_path, "x = np.ones(3 * 2**30 // 8); x[::4096] = 2", "memory",
                   limits=Limits(wall_time=60, memory_mb=1024))
    assert "allocate" in detail or "Memory" in detail


def test_memory_limit_polled_rss(world, tmp_path):
    """Shared anonymous memory escapes RLIMIT_DATA; the run's cgroup (root) or the scorer's PSS poll of the jail's
    processes (no cgroup) still ends the run."""
    body = """
        import mmap
        m = mmap.mmap(-1, 1536 * 2**20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        for i in range(0, len(m), 4096):
            m[i] = 1
        time.sleep(30)
    """
    detail = fails(world, tmp_path, body, "memory", limits=Limits(wall_time=30, memory_mb=1024))
    assert "memory limit of 1024 MiB" in detail or "(PSS)" in detail, detail


@pytest.mark.parametrize("count", [True, False])
def test_budget_enforced_even_with_count_false(world, tmp_path, count):
    body = f"""
        cand, ref = task.sample_contexts(100, seed=0)   # 800 candidates a query
        for _ in range(10):
            checkpoint(0, self)   # the scorer's marks are due (issue 17); this test is about the budget
            task.proxy_reward(cand, count={count})
    """
    detail = fails(world, tmp_path, body, "budget", budget=TrainBudget(proxy_queries=2048))
    assert "asked to score 800 candidates with 448 left" in detail and "1600 used" in detail


def test_every_proxy_route_is_counted(world, tmp_path):
    """task.proxy(x), task.proxy_on(dev)(x), proxy_reward(count=False) and a TiltEnv all count."""
    body = """
        from tiltenv.envs import TiltEnv, TiltVectorEnv
        cand, ref = task.sample_contexts(10, seed=0)   # 80 candidates
        task.proxy(cand); task.proxy_on('cpu')(cand); task.proxy_reward(cand, count=False); task.proxy_reward(cand)
        env = TiltEnv.from_task(task); env.reset(seed=0)
        for _ in range(5):
            env.step(0)
        venv = TiltVectorEnv.from_task(task, num_envs=16); venv.reset(seed=0)
        venv.step(np.zeros(16, dtype=np.int64))
        checkpoint(0, self)
    """
    out = run(world, load_submission(write_agent(tmp_path, body)))
    assert out.proxy_queries == 4 * 80 + 5 + 16


def test_child_exit_without_result(world, tmp_path):
    detail = fails(world, tmp_path, "print('last words', file=sys.stderr, flush=True); os._exit(3)", "protocol")
    assert "exited with code 3" in detail and "last words" in detail


def test_many_checkpoints_at_one_count_are_one(world, tmp_path):
    """The scorer owns the steps (issue 17): ten checkpoints before any query are one, the last delivered."""
    out = run(world, load_submission(write_agent(tmp_path, "for i in range(10):\n    checkpoint(i, self)")),
              TrainBudget(proxy_queries=2048, n_checkpoints=4))
    assert out.steps == [0] and out.logps.shape[0] == 1


# ----------------------------------------------------------------------------------------------- secrets
@pytest.fixture
def secrets(tmp_path, monkeypatch):
    """A 0600 salt file in a world-readable directory, TILTENV_SALT in the scorer's environment, and a
    proxy cache entry under a private (0700) directory, as ~/.cache is."""
    public_dir = Path(tempfile.mkdtemp(prefix="tiltenv-salt-"))
    os.chmod(public_dir, 0o755)
    salt = public_dir / "salt"
    salt.write_text("s3cr3t-salt-value")
    os.chmod(salt, 0o600)
    private = Path(tempfile.mkdtemp(prefix="tiltenv-home-"))  # 0700
    cache = private / "tiltenv" / "proxies"
    cache.mkdir(parents=True)
    (cache / "entry.pt").write_text("proxy weights")
    os.chmod(cache / "entry.pt", 0o644)
    monkeypatch.setenv("TILTENV_SALT", "env-salt-value")
    monkeypatch.setenv("TILTENV_SALT_FILE", str(salt))
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(private / "tiltenv"))
    yield {"salt": str(salt), "cache": str(cache / "entry.pt"), "cache_dir": str(cache)}
    import shutil

    shutil.rmtree(public_dir, ignore_errors=True)
    shutil.rmtree(private, ignore_errors=True)


SPY = """
    found = {{}}
    found['env'] = {{k: v for k, v in os.environ.items()}}
    for key, path in {paths!r}.items():
        try:
            found[key] = open(path).read()[:40]
        except OSError as e:
            found[key] = type(e).__name__
    try:
        found['listdir_cache'] = os.listdir({cache_dir!r})
    except OSError as e:
        found['listdir_cache'] = type(e).__name__
    names, vecs = set(), []
    for o in gc.get_objects():
        t = type(o).__name__
        if t in ('Judge', 'World', 'GoldProxy', 'LinearProxy', 'MLPProxy', 'TableProxy'):
            names.add(t)
        if isinstance(o, torch.Tensor) and o.dtype.is_floating_point and o.numel() == task.d:
            vecs.append([float(v) for v in o.reshape(-1)])
    found['types'] = sorted(names)
    found['vectors'] = vecs[:40]
    found['seed'] = task.config.seed
    found['proxy'] = type(task.proxy).__name__
    found['uid'] = os.getuid()
    found['cwd'] = os.getcwd()
    found['modules'] = [m for m in sys.modules if m.startswith('leaderboard.') and m != 'leaderboard.sandbox.child']
    raise RuntimeError('FOUND' + json.dumps(found) + 'END')
"""


def spy(world, tmp_path, secrets, spawn="zygote"):
    paths = {"salt": secrets["salt"], "cache": secrets["cache"], "parent_environ": f"/proc/{os.getpid()}/environ",
             "parent_mem": f"/proc/{os.getpid()}/mem"}
    detail = fails(world, tmp_path, SPY.format(paths=paths, cache_dir=secrets["cache_dir"]), "error", spawn=spawn)
    return json.loads(detail[detail.index("FOUND") + 5:detail.index("END")])


@pytest.mark.parametrize("spawn", ["zygote", "popen"])
def test_no_secret_reaches_the_child(world, tmp_path, secrets, spawn):
    found = spy(world, tmp_path, secrets, spawn)
    env = found["env"]
    assert "TILTENV_SALT" not in env and not any(k.startswith("TILTENV") for k in env), env
    assert set(env) <= {"PATH", "PYTHONPATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONHASHSEED",
                        "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS"}
    assert env["HOME"] == env["TMPDIR"] == found["cwd"] and "tiltenv-run-" in found["cwd"]
    assert env["OMP_NUM_THREADS"] == "1"
    assert "s3cr3t" not in json.dumps(found) and "env-salt-value" not in json.dumps(found)
    assert found["seed"] is None and found["proxy"] == "RemoteProxy"
    assert found["types"] == [], found["types"]  # no judge, world or real proxy in the child's memory
    theta = world.judge.theta.numpy()
    for v in found["vectors"]:
        assert not (np.allclose(v, theta, atol=1e-5) or np.allclose(v, -theta, atol=1e-5)), v
    assert found["modules"] == [] or "leaderboard.seeds" not in found["modules"]
    # the jail holds no home folder and its /proc only its own processes: nothing there to be refused
    assert found["salt"] == "FileNotFoundError" and found["cache"] == "FileNotFoundError"
    assert found["listdir_cache"] == "FileNotFoundError"
    assert found["parent_environ"] == "FileNotFoundError" and found["parent_mem"] == "FileNotFoundError"
    if IS_ROOT:
        assert found["uid"] != 0


# ----------------------------------------------------------------------------------------------- the channel
CHANNEL_ATTACKS = {
    "garbage header": "os.write(ch.wfd, b'GARBAGE!' * 8)",
    "bad json": "os.write(ch.wfd, struct.pack('<4sIQ', b'TLT1', 5, 0) + b'{nope')",
    "pickle payload": """
        payload = pickle.dumps(Boom())
        h = json.dumps({'op': 'fit_done', 'steps': [0], 'payload': 'pickle'}).encode()
        os.write(ch.wfd, struct.pack('<4sIQ', b'TLT1', len(h), len(payload)) + h + payload)
    """,
    "object dtype": """
        payload = pickle.dumps(Boom())
        h = json.dumps({'op': 'proxy', 'arrays': [{'dtype': '|O', 'shape': [1]}]}).encode()
        os.write(ch.wfd, struct.pack('<4sIQ', b'TLT1', len(h), len(payload)) + h + payload)
    """,
    "huge declared length": """
        h = json.dumps({'op': 'proxy', 'arrays': [{'dtype': '<f8', 'shape': [2**36, 4]}]}).encode()
        os.write(ch.wfd, struct.pack('<4sIQ', b'TLT1', len(h), 2**36 * 32) + h)
    """,
    "huge header": "os.write(ch.wfd, struct.pack('<4sIQ', b'TLT1', 2**31, 0))",
    "unknown op": "ch.send({'op': 'give_me_theta'})",
}


@pytest.mark.parametrize("attack", sorted(CHANNEL_ATTACKS))
def test_channel_attacks(world, tmp_path, attack):
    canary = tmp_path / "canary"
    body = f"""
        import pickle, struct
        from leaderboard.sandbox import child
        ch = child.CHANNEL
        class Boom:
            def __reduce__(self):
                return (os.system, ('touch {canary}',))
        {textwrap.indent(textwrap.dedent(CHANNEL_ATTACKS[attack]), ' ' * 8).strip()}
        time.sleep(30)
    """
    started = time.monotonic()
    expected = "budget" if attack == "huge declared length" else "protocol"
    detail = fails(world, tmp_path, body, expected, limits=Limits(wall_time=20, memory_mb=2048))
    assert time.monotonic() - started < 15, "the scorer must not wait out the limit"
    assert not canary.exists()
    assert detail
    # the scorer is unharmed: the next run works
    assert_valid(run(world, load_submission("tilt", config={"device": "cpu"})))


def test_scorer_never_unpickles():
    for path in (ROOT / "leaderboard" / "sandbox").glob("*.py"):  # the run's side (child.py) unpickles the scorer's task
        src = path.read_text()
        assert path.name == "child.py" or ("pickle.load" not in src and "torch.load" not in src), path.name


def test_no_process_left_behind(world, tmp_path):
    body = """
        import subprocess
        subprocess.Popen(['sleep', '301'])                            # in the run's process group
        subprocess.Popen(['sleep', '302'], start_new_session=True)    # left the group: killed by uid when root
        if os.fork() == 0:                                              # a non-dumpable fork that left the group
            os.setsid()
            time.sleep(303)
        time.sleep(300)
    """
    fails(world, tmp_path, body, "timeout", limits=Limits(wall_time=3, memory_mb=2048))
    time.sleep(0.2)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 301" not in out
    if IS_ROOT:
        assert "sleep 302" not in out
        leftovers = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if "tiltenv-run-" in cwd and cwd.endswith("(deleted)"):  # a finished run's directory
                leftovers.append((pid, cwd))
        assert not leftovers


# ----------------------------------------------------------------------------------------------- reward models
def test_remote_reward_model_example(world):
    sub = load_submission(str(EXAMPLES_DIR / "linear_reward_model.py"))
    assert sub.track == "reward_model"
    prefs = world.task.preferences
    with RemoteRewardModel(sub, world.task, LIMITS) as rm:
        r = rm.score(world.judge.eval_candidates)
        assert r.shape == (64, 8) and r.dtype == torch.float64 and torch.isfinite(r).all()
        acc = ((rm.score(prefs.chosen) > rm.score(prefs.rejected)).double().mean())
        assert acc > 0.8
        again = rm.score(world.judge.eval_candidates)
        assert torch.equal(r, again)
    with pytest.raises(RuntimeError, match="closed"):
        rm.score(world.judge.eval_candidates)


RM_SRC = """
import torch
class RM:
    def fit(self, data):
        {fit}
    def score(self, candidates):
        {score}
def make_reward_model():
    return RM()
"""


@pytest.mark.parametrize("fit, score, reason, words", [
    ("raise KeyError('nope')", "return candidates[..., 0]", "error", "KeyError"),
    ("pass", "return candidates[..., 0] * float('nan')", "invalid_output", "NaN"),
    ("pass", "return candidates[..., :2].sum(-1)[..., :1]", "invalid_output", "shape"),
    ("pass", "return candidates[..., 0] / 0.0", "invalid_output", "inf"),
])
def test_remote_reward_model_faults(world, tmp_path, fit, score, reason, words):
    path = tmp_path / "rm.py"
    path.write_text(RM_SRC.format(fit=fit, score=score))
    sub = load_submission(str(path))
    with pytest.raises(SandboxFailure) as info:
        with RemoteRewardModel(sub, world.task, LIMITS) as rm:
            rm.score(world.judge.eval_candidates)
    assert info.value.reason == reason and words in info.value.detail, info.value.detail


def test_a_reward_model_declaring_a_huge_score_array_is_refused_before_the_scorer_reads_it(world, tmp_path):
    """The declared shape is checked before the payload is read: a 1 TiB declaration used to make the scorer
    allocate it (MemoryError in the scorer, aborting the whole scoring) instead of failing the run."""
    score = (
        "from leaderboard.sandbox import child\n"
        "        import os, json, struct\n"
        "        h = json.dumps({'op': 'scores', 'arrays': [{'dtype': '<f8', 'shape': [2**37]}]}).encode()\n"
        "        os.write(child.CHANNEL.wfd, struct.pack('<4sIQ', b'TLT1', len(h), 2**40) + h)\n"
        "        time.sleep(30)"
    )
    path = tmp_path / "rm.py"
    path.write_text("import time\n" + RM_SRC.format(fit="pass", score=score))
    with pytest.raises(SandboxFailure) as info:
        with RemoteRewardModel(load_submission(str(path)), world.task, LIMITS) as rm:
            rm.score(torch.zeros(3, 4))
    assert info.value.reason == "invalid_output" and "(137438953472,), expected (3,)" in info.value.detail


def test_reward_model_has_no_proxy(world, tmp_path):
    path = tmp_path / "rm.py"
    path.write_text(RM_SRC.format(fit="self.d = data.x_a.shape[1]", score="return candidates[..., 0]"))
    with RemoteRewardModel(load_submission(str(path)), world.task, LIMITS) as rm:
        assert rm.score(torch.zeros(3, 4)).shape == (3,)


# ----------------------------------------------------------------------------------------------- benchmark
def test_bench_channel_quick():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_channel.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio" in out.stdout


@pytest.mark.parametrize("spawn", ["zygote", "popen"])
def test_temporary_files_go_to_the_runs_private_directory(world, tmp_path, spawn):
    """A forked run must not inherit the zygote's cached tempfile directory (SB3's logger writes there)."""
    body = '''
        import tempfile
        d = tempfile.mkdtemp()
        if os.path.dirname(d) != os.getcwd():
            raise RuntimeError(f"temporary files go to {d}, not the run's directory {os.getcwd()}")
        checkpoint(0, lambda c, r: torch.as_tensor(r))
    '''
    out = run(world, load_submission(write_agent(tmp_path, body)), spawn=spawn)
    assert out.steps == [0]


def test_sb3_ppo_runs_in_the_sandbox(world):
    out = run(world, load_submission("sb3_ppo"), budget=TrainBudget(proxy_queries=2048, n_checkpoints=2))
    assert_valid(out)
    assert 0 < out.proxy_queries <= 2048


# ----------------------------------------------------------------------------------------------- network
NET_PROBE = """
    import socket
    seen = {{'interfaces': sorted(n for _, n in socket.if_nameindex())}}
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(('127.0.0.1', {port}))
        s.sendall(b'LEAK')
        seen['connect'] = 'connected'
    except OSError as e:
        seen['connect'] = type(e).__name__ + ': ' + str(e)
    finally:
        s.close()
    try:
        socket.getaddrinfo('pypi.org', 443)
        seen['dns'] = 'resolved'
    except OSError as e:
        seen['dns'] = type(e).__name__
    raise RuntimeError('NET' + json.dumps(seen) + 'END')
"""


@pytest.fixture
def listener():
    """A TCP server on the scorer's loopback: what a submission must not reach (e.g. the board's database)."""
    import socket

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.5)
    yield srv
    srv.close()


def _received(srv) -> bytes:
    import socket

    try:
        conn, _ = srv.accept()
    except (socket.timeout, TimeoutError):
        return b""
    with conn:
        conn.settimeout(2)
        return conn.recv(16)


def net_probe(world, tmp_path, srv, limits, spawn="zygote") -> dict:
    detail = fails(world, tmp_path, NET_PROBE.format(port=srv.getsockname()[1]), "error", limits=limits, spawn=spawn)
    return json.loads(detail[detail.index("NET") + 3:detail.index("END")])


def _require_isolation():
    # a kernel capability, not a service .ci/run could start: a container without CAP_SYS_ADMIN and without
    # unprivileged user namespaces cannot have it, so this skips (saying why) rather than fails there
    ok, why = sandbox.network_isolation()
    if not ok:
        pytest.skip(f"network namespaces are unavailable here: {why}")


@pytest.mark.parametrize("spawn", ["zygote", "popen"])
def test_runs_cannot_reach_the_network(world, tmp_path, listener, spawn):
    _require_isolation()
    seen = net_probe(world, tmp_path, listener, LIMITS, spawn)
    assert seen["interfaces"] == ["lo"], seen
    # a trusted run's namespace has a loopback that is down (unreachable); a jail's has its own loopback, up, on
    # which nothing listens (refused): either way the scorer's listener hears nothing
    assert (seen["connect"].startswith("OSError") and "unreachable" in seen["connect"]
            or seen["connect"].startswith("ConnectionRefusedError")), seen
    assert seen["dns"] != "resolved"
    assert _received(listener) == b""
    # the detector works: with network="allow" the same run reaches the scorer's loopback
    import dataclasses

    seen = net_probe(world, tmp_path, listener, dataclasses.replace(LIMITS, network="allow"), spawn)
    assert seen["connect"] == "connected" and _received(listener) == b"LEAK", seen
    # (isolated runs still talk to the scorer over their pipes: every other test here runs isolated, both spawns)


def test_where_isolation_is_unavailable_isolate_warns_and_require_refuses(world, tmp_path, listener, monkeypatch):
    import dataclasses

    from leaderboard import runner
    from leaderboard.suites import get_suite

    # (a jailed run always has its own network namespace: this is the trusted sandbox's own netns fallback)
    monkeypatch.setattr(isolation, "network_isolation", lambda: (False, "unshare: Operation not permitted (probe)"))
    monkeypatch.setattr(isolation, "_warned_network", False)
    trusted = dataclasses.replace(LIMITS, sandbox="trusted")
    with pytest.warns(UserWarning, match=r"NOT isolated from the network here \(unshare: Operation not permitted \(probe\)\)"):
        seen = net_probe(world, tmp_path, listener, trusted)
    assert seen["connect"] == "connected" and _received(listener) == b"LEAK"  # said, not hidden
    with pytest.raises(RuntimeError, match=r"network='require'.*Operation not permitted \(probe\).*network='isolate'"):
        run(world, load_submission("tilt", config={"device": "cpu"}), limits=Limits(network="require", sandbox="trusted"))

    class NoStore:  # the runner refuses before it plans anything into a store or starts a run
        def add_submission(self, sub):
            pass

        def done_keys(self, *a, **k):
            return set()

    with pytest.raises(RuntimeError, match="network='require'"):
        runner.score([load_submission("tilt")], get_suite("smoke"), store=NoStore(), backend="serial",
                     limits=Limits(network="require", sandbox="trusted"), progress=False)


def test_limits_network_names_its_choices():
    with pytest.raises(ValueError, match=r"network must be one of \['isolate', 'require', 'allow'\] \(got 'off'\)"):
        Limits(network="off")


# ----------------------------------------------------------------------------------------------- exact limits
# Each pins one limit at its boundary: the largest allowed value passes, one more fails (mutation probe).
def test_at_most_n_checkpoints_plus_two_are_evaluated_with_the_channels_steps(world, tmp_path):
    """An agent checkpointing after every query of 100 (and lying about the step) gets the scorer's marks: step 0,
    the first checkpoint at or after each of the 4 marks, the final count; at most n_checkpoints + 2 in all."""
    body = """
        cand, ref = task.sample_contexts(25, seed=0)   # 200 candidates a query
        checkpoint(10**30, self)
        for i in range(10):
            task.proxy_reward(cand)
            checkpoint(-5, self)
    """
    budget = TrainBudget(proxy_queries=2048, n_checkpoints=4)
    assert budget.checkpoint_marks() == [512, 1024, 1536, 2048]
    out = run(world, load_submission(write_agent(tmp_path, body)), budget)
    assert out.steps == [0, 600, 1200, 1600, 2000] and out.proxy_queries == 2000


DEPLOY_AGENT = """
    self.task, self.calls = task, 0
    checkpoint(0, self)
    cand, ref = task.sample_contexts(8, seed=0)   # 64 candidates a query
    for i in range(1, 5):
        task.proxy_reward(cand)
        checkpoint(0, self)
"""


@pytest.mark.parametrize("extra", ["none", "repeat", "other"])
def test_deployment_is_each_evaluation_candidate_once_per_checkpoint(world, tmp_path, extra):
    """Each checkpoint may score its C·K = 64·8 evaluation candidates once (in any order and split), from the
    scorer's cache; one candidate twice, or one it is not evaluated on, fails the run (budget)."""
    policy = ("self.calls += 1; x = torch.as_tensor(candidates); self.task.proxy(x[32:]); self.task.proxy(x[:32].flip(1))\n"
              f"        if self.calls == 3 and {extra!r} == 'repeat': self.task.proxy(x[:1, :1])\n"
              f"        if self.calls == 3 and {extra!r} == 'other': self.task.proxy(x[:1, :1] + 1e-3)\n"
              "        return torch.as_tensor(ref_logp)")
    budget = TrainBudget(proxy_queries=256, n_checkpoints=4)
    if extra == "none":
        out = run(world, load_submission(write_agent(tmp_path, DEPLOY_AGENT, policy=policy)), budget)
        assert (out.proxy_queries, out.deploy_queries, out.steps) == (256, 5 * 512, [0, 64, 128, 192, 256])
        return
    detail = fails(world, tmp_path, DEPLOY_AGENT, "budget", policy=policy, budget=budget)
    assert "checkpoint 2" in detail and ("second time" if extra == "repeat" else "not evaluated on") in detail


@pytest.mark.parametrize("total, ok", [(1.0009, True), (1.0011, False)])
def test_normalization_tolerance_is_1e_3_and_outputs_are_renormalized(world, tmp_path, total, ok):
    """Rows whose probabilities sum to 1.0009 (|logsumexp| = 9.0e-4) pass and are renormalized in float64; 1.0011
    (1.1e-3) fails."""
    policy = f"return torch.as_tensor(ref_logp) + float(np.log({total!r}))"
    if ok:
        out = run(world, load_submission(write_agent(tmp_path, "checkpoint(0, self)", policy=policy)))
        want = torch.log_softmax(world.judge.eval_ref_logp.double() + float(np.log(total)), -1).numpy()
        assert np.array_equal(out.logps[0], want)
    else:
        detail = fails(world, tmp_path, "checkpoint(0, self)", "invalid_output", policy=policy)
        assert "not normalized" in detail and "64 of 64 rows" in detail


def test_wall_time_counts_from_the_start_of_the_run(world, tmp_path):
    """A fit of 4.5 s under a 3 s limit is killed (a deadline later than ``wall_time`` would let it finish)."""
    fails(world, tmp_path, "time.sleep(4.5)\ncheckpoint(0, self)", "timeout", limits=Limits(wall_time=3, memory_mb=2048))


def test_rlimit_data_is_memory_mb(world, tmp_path):
    """Reserving 2.5 GiB (untouched: no resident memory) under memory_mb=2048 fails: RLIMIT_DATA is 2048 MiB."""
    detail = fails(world, tmp_path, "x = np.empty(2560 * 2**20, dtype=np.uint8)\ncheckpoint(0, self)", "memory",
                   limits=Limits(wall_time=60, memory_mb=2048))
    assert "allocate" in detail or "Memory" in detail


@pytest.mark.skipif(not IS_ROOT, reason="the privilege drop happens only when the scorer is root")
@pytest.mark.parametrize("spawn", ["zygote", "popen"])
def test_root_child_has_no_group_of_root(world, tmp_path, spawn):
    """The run drops root's gid and every supplementary group (the scorer gets one here, so dropping it is seen)."""
    body = "raise RuntimeError('IDS' + json.dumps([os.getuid(), os.getgid(), os.getegid(), os.getgroups()]) + 'END')"
    old = os.getgroups()
    os.setgroups(sorted({*old, 0, 4242}))  # inherited by a popen child (the zygote started earlier)
    try:
        detail = fails(world, tmp_path, body, "error", spawn=spawn)
    finally:
        os.setgroups(old)
    uid, gid, egid, groups = json.loads(detail[detail.index("IDS") + 3:detail.index("END")])
    assert uid != 0 and gid != 0 and egid != 0 and groups == []


# ----------------------------------------------------------------------------------------------- protocol attacks
PROTOCOL_ATTACKS = {
    # (fit_done's list of steps is gone: the scorer owns the steps, issue 17)
    "checkpoint frame with a payload": "ch.send({'op': 'checkpoint'}, [np.zeros(2, dtype=np.float32)])",
    "fit_done with a payload": "ch.send({'op': 'fit_done'}, [np.zeros(2, dtype=np.float32)])",
    "proxy request of the wrong d": "ch.send({'op': 'proxy'}, [np.zeros((2, 5), dtype=np.float32)])",
    "checkpoint out of order": """
        ch.send({'op': 'fit_done', 'steps': [0, 1]})
        header, (cand, ref) = ch.recv_arrays()
        ch.send({'op': 'logp', 'index': 1, 'step': 1}, [ref])
    """,
}


@pytest.mark.parametrize("attack", sorted(PROTOCOL_ATTACKS))
def test_protocol_violations_fail_the_run(world, tmp_path, attack):
    body = f"""
        from leaderboard.sandbox import child
        ch = child.CHANNEL
        {textwrap.indent(textwrap.dedent(PROTOCOL_ATTACKS[attack]), ' ' * 8).strip()}
        time.sleep(30)
    """
    fails(world, tmp_path, body, "protocol", budget=TrainBudget(proxy_queries=2048, n_checkpoints=4),
          limits=Limits(wall_time=20, memory_mb=2048))


# ----------------------------------------------------------------------------------------------- framing
def test_array_specs_must_add_up_to_the_payload_exactly():
    from leaderboard.sandbox.channel import MAX_ARRAYS, MAX_NDIM, ProtocolError, check_array_specs

    def spec(shape, dtype="<f4"):
        return {"dtype": dtype, "shape": shape}

    assert check_array_specs({"arrays": [spec([2, 3])]}, 24) == [(np.dtype("<f4"), (2, 3))]
    assert len(check_array_specs({"arrays": [spec([1])] * MAX_ARRAYS}, 4 * MAX_ARRAYS)) == MAX_ARRAYS
    assert check_array_specs({"arrays": [spec([1] * MAX_NDIM, "<f8")]}, 8)[0][1] == (1,) * MAX_NDIM
    for header, plen in [
        ({"arrays": [spec([2, 3])]}, 25),                      # a payload longer than its arrays
        ({"arrays": [spec([2, 3])]}, 23),
        ({"arrays": [spec([1])] * (MAX_ARRAYS + 1)}, 4 * (MAX_ARRAYS + 1)),
        ({"arrays": [spec([1] * (MAX_NDIM + 1))]}, 4),
        ({"arrays": [spec([-2, -3])]}, 24),                    # negative sizes whose product fits
        ({"arrays": [{**spec([2]), "offset": 0}]}, 8),        # unknown keys
        ({"arrays": [spec([2], ">f4")]}, 8),                   # big-endian
        ({"arrays": [spec([2], "<f2")]}, 4),
        ({"arrays": [spec([2])], "payload": "pickle"}, 8),     # only the scorer may send a pickle
    ]:
        with pytest.raises(ProtocolError):
            check_array_specs(header, plen)


def test_channel_checks_magic_and_header_size():
    import struct

    from leaderboard.sandbox.channel import Channel, ProtocolError

    def frame(header: bytes, magic: bytes = b"TLT1") -> bytes:
        return struct.pack("<4sIQ", magic, len(header), 0) + header

    r, w = os.pipe()
    try:
        chan = Channel(r, w)
        h = b'{"op":"x","p":"' + b"a" * 10 + b'"}'
        os.write(w, frame(h))
        assert chan.recv_header(max_header=len(h)) == ({"op": "x", "p": "a" * 10}, 0)
        os.write(w, frame(h))
        with pytest.raises(ProtocolError, match="exceeds"):
            chan.recv_header(max_header=len(h) - 1)
        os.read(r, len(h))
        os.write(w, frame(b'{"op":"x"}', magic=b"TLT2"))
        with pytest.raises(ProtocolError, match="magic"):
            chan.recv_header()
    finally:
        os.close(r)
        os.close(w)


def test_a_sigkill_the_scorer_did_not_send_is_memory(world, tmp_path):
    """The kernel's OOM killer sends SIGKILL: a run killed by a SIGKILL the scorer did not send failed on memory."""
    detail = fails(world, tmp_path, "import signal\nos.kill(os.getpid(), signal.SIGKILL)", "memory")
    assert "OOM" in detail


@pytest.mark.parametrize("kind", ["budget", "timeout", "protocol", "nonsense"])
def test_a_child_cannot_choose_its_failure_reason(world, tmp_path, kind):
    """Only load / memory / invalid_output may come from the child's own report; anything else it claims is an error."""
    body = f"""
        from leaderboard.sandbox import child
        child.CHANNEL.send({{'op': 'error', 'stage': 'fit', 'kind': {kind!r}, 'type': 'X', 'message': 'claimed'}})
        time.sleep(30)
    """
    assert "claimed" in fails(world, tmp_path, body, "error", limits=Limits(wall_time=20, memory_mb=2048))


def test_the_network_probe_fails_only_when_the_kernel_refuses():
    """``python leaderboard/sandbox/netns.py`` exits 0 (isolated), or 1 because unshare was refused; an unshare that
    'succeeds' but leaves interfaces would silently turn isolation off (every network test would skip)."""
    from leaderboard.sandbox import netns as _netns

    probe = subprocess.run([sys.executable, "-I", _netns.__file__], env={}, cwd="/", capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        assert "unshare(" in probe.stderr and "failed" in probe.stderr, probe.stderr
    else:
        assert probe.stderr == ""
