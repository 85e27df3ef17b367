"""tiltenv sweep: every column explained (--explain), β stated, verdict rule, --threads."""

from __future__ import annotations

import pytest

from tiltenv import sweep
from tiltenv.glossary import METRICS


def test_explain_names_every_column_with_its_formula(capsys):
    assert sweep.main(["--explain"]) == 0
    out = capsys.readouterr().out
    for col in sweep.COLUMNS:
        assert col in out and METRICS[col][1] in out
    assert "task's β on every row (not tilt_beta)" in out and "OVEROPTIMIZED when" in out and "1%" in out


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "100000"])
def test_bad_thread_count_is_one_line_and_exit_2(value, capsys):
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--threads", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--threads must be" in err and len(err.splitlines()) == 1


def test_threads_are_applied():
    import torch

    before = torch.get_num_threads()
    try:
        from tiltenv._validation import apply_threads
        assert apply_threads(None, "2") == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_user_errors_are_one_line_exit_2(capsys):
    for argv in (["--env", "CartPole-v1"], ["--env", "tiltenv/Hmp-v0"], ["--set", "d=16.5"], ["--set", "novalue"]):
        try:
            code = sweep.main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert sweep._parse_set(["beta=inf", "d=16"]) == {"beta": float("inf"), "d": 16}
