"""Reproductions of the papers' headline results (issue 11): one script per result, see docs/results.md."""
