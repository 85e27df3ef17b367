"""Attacks a submission can try to leave its run's box (issue 18): each is a small submission here, must fail
with its reason (or be harmless) and leave no process and no file on the host.

Every test here fails against the process sandbox before the jail (uid + rlimits + a /proc pass): run them
with ``PYTHONPATH=<a checkout of that commit>`` to see it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from baselines import TrainBudget
from leaderboard.sandbox import isolation, run_agent
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import load_submission
from tiltenv import TaskConfig, make_world

BUDGET = TrainBudget(proxy_queries=2048, n_checkpoints=4)
LIMITS = Limits(wall_time=60, memory_mb=2048)
IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the jail is Linux namespaces")


@pytest.fixture(scope="module")
def world():
    return make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=11), fresh=True)


@pytest.fixture
def token():
    return "tiltenv-attack-" + uuid.uuid4().hex[:10]


def write_agent(tmp_path: Path, body: str, name: str = "agent.py") -> str:
    src = textwrap.dedent('''\
        import os, sys, json, time, ctypes
        import numpy as np
        import torch

        class Agent:
            def fit(self, task, budget, checkpoint):
        {body}
            def policy(self, candidates, ref_logp):
                return torch.as_tensor(ref_logp)

        def make_agent():
            return Agent()
        ''').format(body=textwrap.indent(textwrap.dedent(body), " " * 8))
    path = tmp_path / name
    path.write_text(src)
    return str(path)


def run(world, path: str, limits: Limits = LIMITS, **kw):
    return run_agent(load_submission(path), world.task, BUDGET, world.judge.eval_candidates, world.judge.eval_ref_logp,
                     limits, **kw)


def failure(world, path: str, limits: Limits = LIMITS, **kw) -> SandboxFailure:
    with pytest.raises(SandboxFailure) as info:
        run(world, path, limits, **kw)
    return info.value


def report(exc: SandboxFailure) -> dict:
    """What an attacking submission reported by raising ``RuntimeError('REPORT' + json + 'END')``."""
    d = exc.detail
    assert "REPORT" in d, d
    return json.loads(d[d.index("REPORT") + 6:d.index("END", d.index("REPORT"))])


def procs_with(marker: str) -> list[int]:
    """Host pids whose command line or name holds ``marker`` (not this test process)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":  # a zombie (exited, not reaped by the host's init)
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/comm", "rb") as f:
                comm = f.read()
        except OSError:
            continue
        if marker.encode() in cmd or marker[:15].encode() in comm:
            out.append(int(name))
    return out


def kill_all(marker: str, rounds: int = 200) -> None:
    """Test hygiene: leave nothing behind even when the sandbox under test let something escape."""
    for _ in range(rounds):
        pids = procs_with(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


@pytest.fixture
def hygiene(token):
    yield token
    Path(f"/tmp/{token}.stop").touch()  # a hopper that escaped stops (a kill by name could miss it)
    time.sleep(0.1)
    kill_all(token)
    for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        for q in Path(p).glob(f"{token}*") if os.path.isdir(p) else []:
            try:
                q.unlink()
            except OSError:
                shutil.rmtree(q, ignore_errors=True)


def assert_no_trace(token: str, wait: float = 1.0) -> None:
    time.sleep(wait)  # a surviving process would have forked again by now
    assert procs_with(token) == [], f"processes of the run are alive after it ended: {procs_with(token)}"
    left = [str(q) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(p)
            for q in Path(p).glob(f"{token}*") if not q.name.endswith(".stop")]
    assert left == [], f"the run left files on the host: {left}"


NAME = "ctypes.CDLL(None).prctl(15, {tok!r}.encode()[:15], 0, 0, 0)  # PR_SET_NAME: the test finds it by name"


# ----------------------------------------------------------------------------------------------- nothing outlives a run
HOPPER = """
    import shutil, subprocess
    # a small interpreter that forks itself in a new session all the time (the old pid exits at once): a single
    # pass over /proc reads a pid that is gone and never sees the one forked meanwhile
    code = (
        "import os, sys, time\\n"
        "end, n = time.time() + 30, 0\\n"
        "while time.time() < end and not os.path.exists('/tmp/{token}.stop'):\\n"
        "    n += 1\\n"
        "    {action}\\n"
        "    if os.fork():\\n"
        "        os._exit(0)\\n"
        "    os.setsid()\\n"
    )
    python = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
    subprocess.Popen([python, '-I', '-S', '-c', code, '{token}'], start_new_session=True)
    time.sleep(0.3)
    checkpoint(0, self)
"""


def alive(token: str, seconds: float = 1.0) -> list[int]:
    """Processes of ``token`` seen in any of many passes over /proc for ``seconds`` (one pass misses a hopper)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = procs_with(token)
        if pids:
            return pids
    return []


def test_fork_hopping_setsid_grandchild_does_not_outlive_the_run(world, tmp_path, hygiene):
    token = hygiene
    out = run(world, write_agent(tmp_path, HOPPER.format(token=token, action="pass")))
    assert out.steps == [0]
    assert alive(token) == [], "a process of the run is alive after it ended"
    assert_no_trace(token, wait=0.0)


def test_a_lurker_cannot_wait_for_a_later_run_of_the_same_uid(world, tmp_path, hygiene, monkeypatch):
    """A hopping lurker that, 2 s after it started, kills every process of its uid (``kill(-1, SIGKILL)``); the uid counter
    is advanced as 1,000 runs would, so that (before the jail) the next run got the attacker's uid and was killed."""
    token = hygiene
    lurker = HOPPER.format(token=token, action="time.time() > end - 28 and os.kill(-1, 9)")  # from 2 s on
    run(world, write_agent(tmp_path, lurker, "attacker.py"))
    n = next(isolation._run_counter)
    monkeypatch.setattr(isolation, "_run_counter", itertools.count(n + 999))  # the next run: 1,000 runs later
    victim = write_agent(tmp_path, "time.sleep(3.0)\ncheckpoint(0, self)", "victim.py")
    out = run(world, victim)  # before the jail: killed by a SIGKILL the scorer did not send (memory)
    assert out.steps == [0]
    assert alive(token, 0.5) == []
    assert_no_trace(token, wait=0.0)


def test_uids_do_not_repeat_within_a_scorer(monkeypatch):
    if not IS_ROOT:
        pytest.skip("per-run uids are taken only by a root scorer")
    uids = []
    for start in (5, 1005, 2005):  # 1,000 runs apart
        monkeypatch.setattr(isolation, "_run_counter", itertools.count(start))
        uids.append(isolation._run_ids()[0])
    assert len(set(uids)) == 3, uids


# ----------------------------------------------------------------------------------------------- memory
def test_shm_memfd_and_grandchildren_over_the_limit_fail_memory(world, tmp_path, hygiene):
    token = hygiene
    body = f"""
        chunk = b'x' * (1 << 20)
        with open('/dev/shm/{token}', 'wb') as f:       # 600 MiB of shared memory in a file
            for _ in range(600):
                f.write(chunk)
        fd = os.memfd_create('{token}')                 # 600 MiB in a memfd
        for _ in range(600):
            os.write(fd, chunk)
        for _ in range(2):                             # 2 x 408 MiB in setsid grandchildren
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    {NAME.format(tok=token)}
                    b = bytearray(408 << 20)
                    b[::4096] = b'y' * len(b[::4096])
                    time.sleep(60)
                os._exit(0)
        time.sleep(5)
        checkpoint(0, self)
    """
    exc = failure(world, write_agent(tmp_path, body), Limits(wall_time=60, memory_mb=512))
    assert exc.reason == "memory", (exc.reason, exc.detail)
    assert_no_trace(token)


def test_forked_copies_of_a_torch_process_are_not_a_memory_false_positive(world, tmp_path, hygiene):
    """150 forked copies of a process holding 64 MiB share their pages copy-on-write: far under the limit, although
    the sum of their resident sizes is ~150 x that (the group-RSS poll killed this run)."""
    token = hygiene
    body = """
        x = torch.ones(16 << 20)                         # 64 MiB, touched
        kids = []
        for _ in range(150):
            pid = os.fork()
            if pid == 0:
                time.sleep(2.0)
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        checkpoint(0, self)
    """
    out = run(world, write_agent(tmp_path, body), Limits(wall_time=60, memory_mb=2048))
    assert out.steps == [0]
    assert_no_trace(token, wait=0.2)


# ----------------------------------------------------------------------------------------------- what a run can see
@pytest.fixture
def host_secrets(token):
    """A world-readable board file (mode 644, as SQLite made it) in a world-readable folder, a unix-socket
    server, an abstract unix socket, and a host process whose command line holds a database password."""
    d = Path(tempfile.mkdtemp(prefix=f"{token}-board-"))
    os.chmod(d, 0o755)
    board = d / "board.db"
    board.write_text(f"every stored result {token}")
    os.chmod(board, 0o644)
    sock_path = str(d / "db.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    os.chmod(sock_path, 0o777)
    srv.listen(4)
    srv.settimeout(0.2)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + token)
    abstract.listen(4)
    abstract.settimeout(0.2)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", f"postgresql://u:PW{token}@db/x"])
    yield {"board": str(board), "sock": sock_path, "abstract": token, "password": f"PW{token}", "srv": srv,
           "abstract_srv": abstract}
    proc.kill()
    proc.wait()
    srv.close()
    abstract.close()
    shutil.rmtree(d, ignore_errors=True)


SNOOP = """
    import socket
    found = {{}}
    try:
        found['board'] = open({board!r}).read()
    except OSError as e:
        found['board'] = type(e).__name__
    for key, addr in (('sock', {sock!r}), ('abstract', '\\0' + {abstract!r})):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(addr)
            s.sendall(b'LEAK')
            found[key] = 'connected'
        except OSError as e:
            found[key] = type(e).__name__
    cmdlines = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                cmdlines.append(open(f'/proc/{{p}}/cmdline', 'rb').read().decode(errors='replace'))
            except OSError:
                pass
    found['password'] = any({password!r} in c for c in cmdlines)
    found['n_procs'] = len(cmdlines)
    found['root'] = sorted(os.listdir('/'))
    found['repo'] = [p for p in ({repo!r} + '/tests', {repo!r} + '/.git', '/work/main/.git') if os.path.exists(p)]
    found['home'] = os.path.exists(os.path.expanduser('~root')) and os.listdir(os.path.expanduser('~root'))
    raise RuntimeError('REPORT' + json.dumps(found) + 'END')
"""


def _accepted(srv) -> bool:
    try:
        conn, _ = srv.accept()
    except (socket.timeout, TimeoutError, OSError):
        return False
    conn.close()
    return True


@pytest.mark.parametrize("spawn", ["zygote", "popen"])
def test_a_run_sees_no_board_socket_or_host_process(world, tmp_path, host_secrets, spawn):
    s = host_secrets
    body = SNOOP.format(board=s["board"], sock=s["sock"], abstract=s["abstract"], password=s["password"],
                        repo=str(Path(__file__).resolve().parents[2]))
    exc = failure(world, write_agent(tmp_path, body), spawn=spawn)
    assert exc.reason == "error", exc.detail
    found = report(exc)
    assert found["board"] == "FileNotFoundError", found
    assert found["sock"] == "FileNotFoundError" and found["abstract"] == "ConnectionRefusedError", found
    assert not _accepted(s["srv"]) and not _accepted(s["abstract_srv"])
    assert found["password"] is False, found
    assert found["n_procs"] <= 4, found  # bwrap's init, its stub, the run (and nothing of the host)
    assert "home" not in found["root"] and found["repo"] == [], found  # only the package folders are bound
    assert not {".cache", ".config", ".ssh"} & set(found["home"] or []), found  # only the interpreter under ~root


def test_files_in_tmp_and_var_tmp_do_not_outlive_the_run(world, tmp_path, hygiene):
    token = hygiene
    body = f"""
        for d in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock'):
            try:
                with open(os.path.join(d, '{token}'), 'w') as f:
                    f.write('left behind')
            except OSError:
                pass
        checkpoint(0, self)
    """
    run(world, write_agent(tmp_path, body))
    assert_no_trace(token, wait=0.0)


# ----------------------------------------------------------------------------------------------- floods
def test_disk_flood_is_capped_by_the_tmpfs_size(world, tmp_path):
    body = """
        chunk, n = b'z' * (1 << 20), 0
        try:
            with open('flood.bin', 'wb') as f:
                for _ in range(600):
                    f.write(chunk)
                    f.flush()
                    n += 1
        except OSError as e:
            raise RuntimeError('REPORT' + json.dumps({'mib': n, 'error': type(e).__name__}) + 'END')
        raise RuntimeError('REPORT' + json.dumps({'mib': n, 'error': None}) + 'END')
    """
    exc = failure(world, write_agent(tmp_path, body), dataclasses.replace(LIMITS, disk_mb=128))
    found = report(exc)
    assert found["error"] == "OSError" and found["mib"] <= 128, found


def test_process_flood_is_capped(world, tmp_path, token):
    body = f"""
        n = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    {NAME.format(tok=token)}
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as e:
            raise RuntimeError('REPORT' + json.dumps({{'forked': n, 'error': type(e).__name__}}) + 'END')
        raise RuntimeError('REPORT' + json.dumps({{'forked': n, 'error': None}}) + 'END')
    """
    try:
        exc = failure(world, write_agent(tmp_path, body), dataclasses.replace(LIMITS, max_processes=48))
        found = report(exc)
        assert found["error"] == "BlockingIOError" and found["forked"] < 48, found
        assert_no_trace(token, wait=0.2)
    finally:
        kill_all(token)


def test_cpu_time_is_capped(world, tmp_path, hygiene):
    """Four busy processes for 2 s of wall time: 8 s of CPU (on 2+ cores) > a cap of 1.5 s."""
    token = hygiene
    body = f"""
        for _ in range(3):
            if os.fork() == 0:
                {NAME.format(tok=token)}
                while True:
                    pass
        end = time.time() + 20
        while time.time() < end:
            pass
        checkpoint(0, self)
    """
    exc = failure(world, write_agent(tmp_path, body), dataclasses.replace(LIMITS, wall_time=30, cpu_time=1.5))
    assert exc.reason == "timeout" and "CPU" in exc.detail, (exc.reason, exc.detail)
    assert_no_trace(token, wait=0.2)


# ----------------------------------------------------------------------------------------------- seccomp
def test_seccomp_denies_ptrace_unshare_mount_and_sets_no_new_privs(world, tmp_path):
    body = """
        libc = ctypes.CDLL(None, use_errno=True)
        found = {}
        def call(name, *args):
            rc = getattr(libc, name)(*args)
            found[name] = 0 if rc == 0 else os.strerror(ctypes.get_errno())
        call('unshare', 0x10000000)                       # CLONE_NEWUSER
        call('unshare', 0x00020000)                       # CLONE_NEWNS
        found['unshare_user'] = found.pop('unshare')
        call('mount', b'none', b'/tmp', b'tmpfs', 0, None)
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        call('ptrace', 16, pid, None, None)               # PTRACE_ATTACH
        os.kill(pid, 9)
        status = open('/proc/self/status').read()
        found['nnp'] = [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')][0]
        found['seccomp'] = [l.split()[1] for l in status.splitlines() if l.startswith('Seccomp:')][0]
        found['caps'] = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]
        raise RuntimeError('REPORT' + json.dumps(found) + 'END')
    """
    found = report(failure(world, write_agent(tmp_path, body)))
    assert found["unshare_user"] == "Operation not permitted", found
    assert found["mount"] == "Operation not permitted" and found["ptrace"] == "Operation not permitted", found
    assert found["nnp"] == "1" and found["seccomp"] == "2" and int(found["caps"], 16) == 0, found


# ----------------------------------------------------------------------------------------------- scorers and backends
def test_without_a_jail_the_scorer_refuses_and_trusted_runs_are_marked(world, tmp_path, monkeypatch):
    from leaderboard.sandbox import jail

    monkeypatch.setattr(jail, "available", lambda: (False, "bwrap (bubblewrap) is not installed: install bubblewrap"))
    with pytest.raises(RuntimeError, match=r"refusing to run submissions.*bubblewrap.*sandbox='trusted'"):
        run(world, "tilt")
    monkeypatch.setattr(isolation, "_warned_trusted", False)
    with pytest.warns(UserWarning, match="NOT jailed"):
        out = run(world, "tilt", dataclasses.replace(LIMITS, sandbox="trusted"))
    assert out.steps


def test_limits_name_their_choices():
    with pytest.raises(ValueError, match=r"sandbox must be one of \['jail', 'trusted'\] \(got 'none'\)"):
        Limits(sandbox="none")
    with pytest.raises(ValueError, match=r"Limits.max_processes must be an integer >= 1 \(got 0\)"):
        Limits(max_processes=0)


POOL_SPY = "REPORT"


@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_pool_and_ray_backends_run_in_the_jail(tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray")
    from leaderboard import runner
    from leaderboard.suites import get_suite

    body = """
        pids = [p for p in os.listdir('/proc') if p.isdigit()]
        raise RuntimeError('REPORT' + json.dumps({'root': sorted(os.listdir('/')), 'n_procs': len(pids),
                                                  'seccomp': open('/proc/self/status').read().count('Seccomp:\\t2')}) + 'END')
    """
    sub = load_submission(write_agent(tmp_path, body))

    class Mem:
        def __init__(self):
            self.saved = []

        def add_submission(self, sub):
            pass

        def done_keys(self, *a, **k):
            return set()

        def save(self, res):
            self.saved.append(res)

    store = Mem()
    runner.score([sub], get_suite("smoke"), store=store, backend=backend, workers=2, limits=LIMITS, progress=False,
                 tasks=None, n_seeds=1)
    assert store.saved
    for res in store.saved:
        assert res.reason == "error", res.detail
        d = res.detail
        found = json.loads(d[d.index("REPORT") + 6:d.index("END", d.index("REPORT"))])
        assert found["n_procs"] <= 4 and found["seccomp"] == 1 and "home" not in found["root"], found


# ----------------------------------------------------------------------------------------------- a non-root scorer
NONROOT_USER = "tiltenv-jail-test"

NONROOT_SCORER = r"""
import json, os, sys
from tiltenv import TaskConfig, make_world
from baselines import TrainBudget
from leaderboard.sandbox import run_agent
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import load_submission
salt = os.path.join(os.environ["HOME"], "salt")
with open(salt, "w") as f:
    f.write("s3cr3t")
os.chmod(salt, 0o600)
world = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=11), fresh=True)
src = '''
import os, json, torch
class Agent:
    def fit(self, task, budget, checkpoint):
        found = {}
        for key, p in (("salt", SALT), ("environ", "/proc/%d/environ" % PPID)):
            try:
                found[key] = open(p).read()[:20]
            except OSError as e:
                found[key] = type(e).__name__
        found["uid"] = os.getuid()
        found["n_procs"] = len([p for p in os.listdir("/proc") if p.isdigit()])
        raise RuntimeError("REPORT" + json.dumps(found) + "END")
    def policy(self, c, r):
        return torch.as_tensor(r)
def make_agent():
    return Agent()
'''.replace("SALT", repr(salt)).replace("PPID", str(os.getpid()))
path = os.path.join(os.environ["HOME"], "attacker.py")
with open(path, "w") as f:
    f.write(src)
try:
    run_agent(load_submission(path), world.task, TrainBudget(proxy_queries=64, n_checkpoints=1),
              world.judge.eval_candidates, world.judge.eval_ref_logp, Limits(wall_time=60, memory_mb=2048))
except SandboxFailure as e:
    d = e.detail
    print("RESULT" + d[d.index("REPORT") + 6:d.index("END", d.index("REPORT"))] + "ENDRESULT")
"""


def _nonroot_python(user: str) -> str | None:
    """Why ``user`` cannot run this interpreter with the project importable, or None if it can."""
    probe = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "import torch, tiltenv, leaderboard"],
                           capture_output=True, text=True, env={"PATH": os.environ.get("PATH", ""),
                                                                "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                           cwd="/", timeout=120)
    return None if probe.returncode == 0 else probe.stderr.strip()[-300:]


def test_a_non_root_scorer_jails_its_runs_too(tmp_path):
    """As an unprivileged user (created here when the test runs as root, as CI does), the scorer still jails its
    runs (unprivileged user namespaces): the run cannot read the scorer's 0600 salt file nor its /proc."""
    if not IS_ROOT:
        user = None
    else:
        if shutil.which("useradd") is None or shutil.which("runuser") is None:
            pytest.skip("useradd/runuser are missing: cannot create an unprivileged scorer")
        subprocess.run(["useradd", "--create-home", NONROOT_USER], capture_output=True)
        why = _nonroot_python(NONROOT_USER)
        if why is not None:
            pytest.skip(f"the unprivileged user {NONROOT_USER} cannot run {sys.executable} (its folders are not "
                        f"reachable, e.g. /root is 0700; .ci/run opens them): {why}")
        user = NONROOT_USER
    home = Path(tempfile.mkdtemp(prefix="tiltenv-nonroot-"))
    try:
        if user is not None:
            shutil.chown(home, user, user)
        script = home / "scorer.py"
        script.write_text(NONROOT_SCORER)
        os.chmod(script, 0o644)
        cmd = [sys.executable, str(script)]
        if user is not None:
            cmd = ["runuser", "-u", user, "--", *cmd]
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HOME": str(home)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(home), timeout=300)
        out = proc.stdout + proc.stderr
        assert "RESULT" in out, out[-3000:]
        found = json.loads(out[out.index("RESULT") + 6:out.index("ENDRESULT")])
        assert found["salt"] == "FileNotFoundError" and found["environ"] == "FileNotFoundError", found
        assert found["n_procs"] <= 4, found
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- storage
def test_a_runs_output_and_sandbox_are_stored(tmp_path):
    """The last 64 KiB of a run's stdout/stderr and how it was isolated land on the board (runs, failures)."""
    from leaderboard import runner
    from leaderboard.store import Store
    from leaderboard.suites import get_suite

    body = """
        print('x' * 100_000)                                  # more than 64 KiB: only the tail is kept
        print('hello from the run', flush=True)
        print('to stderr', file=sys.stderr, flush=True)
        raise ValueError('boom')
    """
    sub = load_submission(write_agent(tmp_path, body))
    store = Store(f"sqlite:///{tmp_path / 'board.db'}")
    runner.score([sub], get_suite("smoke"), store=store, backend="serial", limits=LIMITS, progress=False,
                 tasks=[get_suite("smoke").entries[0].key], n_seeds=1)
    fails = store.failures()
    assert len(fails) >= 1 and set(fails["sandbox"]) == {"jail"}
    out = fails["output"].iloc[0]
    assert "hello from the run" in out and "to stderr" in out and len(out.encode()) <= 64 * 1024 + 200, len(out)
    assert set(store.runs()["sandbox"]) == {"jail"}


def test_a_new_sqlite_board_is_private_and_an_open_one_warns(tmp_path):
    from leaderboard.store import Store

    path = tmp_path / "board.db"
    Store(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning, match=r"board file .*board.db is readable by other users \(mode 644\): chmod 600"):
        Store(f"sqlite:///{path}").close()


def test_a_password_in_db_warns(tmp_path):
    from typer.testing import CliRunner

    from leaderboard.cli import app

    res = CliRunner().invoke(app, ["board", "--db", "postgresql+psycopg2://u:hunter2@127.0.0.1:1/x"])
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "holds a password" in text and "TILTENV_DB" in text, text
