"""Every fenced Python block of README.md, baselines/README.md and docs/submitting.md runs as pasted (after the
Quickstart).

A block preceded by ``<!-- skip-test -->`` is not run. Blocks of one file run in order in one namespace, as a
reader pasting them into one session would. Shell blocks are checked for the venv rule (``.venv/bin/python``).
Every metric of tiltenv.glossary is documented in docs/metrics.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = ["README.md", "baselines/README.md", "docs/submitting.md"]
FENCE = re.compile(r"(<!--\s*skip-test\s*-->\s*\n)?```(\w*)\n(.*?)```", re.S)


def blocks(name: str, lang: str) -> list[tuple[bool, str]]:
    text = (ROOT / name).read_text()
    return [(bool(skip), body) for skip, tag, body in FENCE.findall(text) if tag == lang]


@pytest.mark.parametrize("name", READMES)
def test_python_blocks_run(name, monkeypatch):
    code = [body for skip, body in blocks(name, "python") if not skip]
    assert code, f"{name} has no runnable Python block"
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__readme__"}
    for i, body in enumerate(code):
        exec(compile(body, f"{name}[python block {i}]", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize("name", READMES)
def test_shell_commands_use_the_venv(name):
    for _skip, body in blocks(name, "bash"):
        for line in body.splitlines():
            cmd = line.split("#", 1)[0].strip()
            if re.match(r"^python3?\s", cmd):
                pytest.fail(f"{name}: {cmd!r} needs the venv: write .venv/bin/python (the venv is not active)")
    text = (ROOT / name).read_text()
    for cmd in re.findall(r"`(python3? [^`]*)`", text):
        if cmd.startswith(("python3 -m venv", "python -m venv")):  # creating the venv is the one exception
            continue
        pytest.fail(f"{name}: inline command {cmd!r} needs .venv/bin/python")


def test_docs_metrics_names_every_metric():
    from tiltenv.glossary import METRICS

    doc = (ROOT / "docs" / "metrics.md").read_text()
    missing = [name for name in METRICS if f"`{name}`" not in doc]
    assert not missing, f"docs/metrics.md does not define {missing}"


def test_submitting_page_tables_match_the_suites_and_the_readme_links_it():
    """docs/submitting.md's K, d, β and budget of every suite entry are the suites' (and tiltenv suites' K and d)."""
    import dataclasses

    import tiltenv
    from leaderboard.suites import SUITES, entry_shape

    doc = (ROOT / "docs" / "submitting.md").read_text()
    assert "(docs/submitting.md)" in (ROOT / "README.md").read_text()
    for s in SUITES.values():
        section = doc[doc.index(f"**{s.name}** v{s.version}"):]
        for e in s.entries:
            sh = entry_shape(e)
            cls, preset, _ = tiltenv.TASKS[e.task_id.removeprefix("tiltenv/").removesuffix("-v0")]
            beta = {**{f.name: f.default for f in dataclasses.fields(cls)}, **preset, **e.kwargs}["beta"]
            row = (f"| `{e.key}` | `{e.task_id}` | {sh['K']} | {'–' if sh['d'] is None else sh['d']} | {beta:g} | "
                   f"{e.proxy_queries:,} | {e.n_checkpoints} |")
            assert row in section, row
    for word in (".chosen", ".rejected", ".x", ".y", "TrainBudget", "last checkpoint you report"):
        assert word in doc, word
