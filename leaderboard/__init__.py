"""The tiltenv leaderboard: submit an agent (or a reward model), score it on hidden-seed suites, rank, report.

=======================  ==========================================================================================
module                   what
=======================  ==========================================================================================
:mod:`.spec`             the records the modules pass around (RunSpec, RunResult, Limits, failure reasons)
:mod:`.seeds`            public dev seeds; test seeds = HMAC of the scorer's secret salt
:mod:`.suites`           named, versioned suites (``smoke``, ``quick``, ``full``)
:mod:`.submission`       a baseline name, ``module:factory`` or a file; identified by a hash of its code
:mod:`.sandbox`          each run in its own unprivileged process; the proxy behind a counting channel
:mod:`.scoring`          exact run metrics, rliable aggregation (IQM, stratified bootstrap CIs), the RM track
:mod:`.store`            SQLAlchemy storage (SQLite file by default, any URL; PostgreSQL tested)
:mod:`.runner`           serial / process pool / Ray execution, resumable and idempotent
:mod:`.report`           one static HTML page with the board, trajectories and failures
:mod:`.check`            ``tiltenv check``: the scorer's code on one task, the submission in this process
:mod:`.cli`              the ``tiltenv`` command line
=======================  ==========================================================================================

This package imports nothing at import time on purpose: the sandbox's zygote process imports it, and every
sandboxed run inherits the zygote's memory (it must never hold a salt, a seed or a judge).
"""
