"""World seeds of a suite: public **dev** seeds, and **test** seeds derived from the scorer's secret salt.

A test seed is ``HMAC-SHA256(salt, "suite/version/task_key/index/code_hash")`` truncated to 63 bits: without the
salt nobody (a submission included) can know the gold direction θ* of a scored task in advance, and with it the
scorer can always rebuild the same worlds. The submission's **code hash** is part of the message, so every
submission is scored on worlds no other submission ever sees (private test worlds, issue 17): nothing learned
from earlier results — boards, reports, exports, trajectories — says anything about the next submission's
worlds; re-scoring the same code gives the same worlds, an edited file gets new ones. The salt comes from, in
order:

1. the environment variable ``TILTENV_SALT`` (any non-empty string);
2. the file named by ``TILTENV_SALT_FILE``, or ``~/.config/tiltenv/salt`` — created on first use with 32
   random bytes (hex), mode ``0600`` in a ``0700`` directory.

The salt is never passed to a submission: the sandbox hands a submission's process a scrubbed environment
(no ``TILTENV_SALT``) and, when the scorer runs as root, another user id that cannot read the salt file.

Example:
    >>> from leaderboard.seeds import dev_seed, test_seed
    >>> dev_seed("smoke", "hump", 0) == dev_seed("smoke", "hump", 0)
    True
    >>> test_seed(b"salt", "smoke", 1, "hump", 0, "ab12") != test_seed(b"other salt", "smoke", 1, "hump", 0, "ab12")
    True
    >>> test_seed(b"salt", "smoke", 1, "hump", 0, "ab12") != test_seed(b"salt", "smoke", 1, "hump", 0, "cd34")
    True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["SALT_ENV", "SALT_FILE_ENV", "default_salt_file", "load_salt", "dev_seed", "test_seed"]

SALT_ENV = "TILTENV_SALT"
SALT_FILE_ENV = "TILTENV_SALT_FILE"
_MASK = (1 << 63) - 1


def default_salt_file() -> Path:
    """``$TILTENV_SALT_FILE`` or ``~/.config/tiltenv/salt``."""
    path = os.environ.get(SALT_FILE_ENV)
    return Path(path).expanduser() if path else Path.home() / ".config" / "tiltenv" / "salt"


def load_salt(*, create: bool = True) -> bytes:
    """The scorer's secret salt (see the module docstring for where it comes from).

    Args:
        create: create the salt file (0600) when it does not exist; otherwise a missing salt is an error.

    Raises:
        RuntimeError: no salt is set and ``create`` is False, the salt file is empty, or it is readable by
            other users (mode wider than 0600).
    """
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode()
    path = default_salt_file()
    if not path.exists():
        if not create:
            raise RuntimeError(f"no test-seed salt: set {SALT_ENV} or create {path} (it is created on first scoring).")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another scorer created it first: read theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise RuntimeError(
            f"the salt file {path} has mode {oct(mode)}: other users could read it and learn the test worlds. "
            f"Run `chmod 600 {path}`."
        )
    salt = path.read_text().strip().encode()
    if not salt:
        raise RuntimeError(f"the salt file {path} is empty: delete it to create a new salt, or set {SALT_ENV}.")
    return salt


def _to_seed(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big") & _MASK


def dev_seed(suite: str, task_key: str, index: int) -> int:
    """The public world seed of the ``index``-th dev run of ``task_key`` in ``suite`` (stable across versions)."""
    return _to_seed(hashlib.sha256(f"tiltenv-dev/{suite}/{task_key}/{int(index)}".encode()).digest())


def test_seed(salt: bytes, suite: str, version: int, task_key: str, index: int, code_hash: str) -> int:
    """The secret world seed of a test run: HMAC-SHA256 of the salt over (suite, version, task, index, code hash).

    Raises:
        ValueError: an empty salt or code hash (a test world is private to one submission's code).
    """
    if not isinstance(salt, (bytes, bytearray)) or not salt:
        raise ValueError("salt must be non-empty bytes (see leaderboard.seeds.load_salt).")
    if not isinstance(code_hash, str) or not code_hash:
        raise ValueError(f"code_hash must be the submission's code hash, a non-empty string (got {code_hash!r}): "
                         "test worlds are private to one submission.")
    msg = f"tiltenv-test/{suite}/{int(version)}/{task_key}/{int(index)}/{code_hash}".encode()
    return _to_seed(hmac.new(bytes(salt), msg, hashlib.sha256).digest())


test_seed.__test__ = False  # not a pytest test
