"""Worlds: task configurations, the world builders (single-index and tabular, multi-objective, token
sequences) with their public task and hidden judge, the judge's exact scoring and the evaluation of any
policy against it.

Inside: ``config``, ``scoring`` <- ``world`` <- ``multiobjective``, ``tokens``, ``evaluation``."""
