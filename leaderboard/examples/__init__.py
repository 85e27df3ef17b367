"""Example submissions written only against the public protocol (see ``leaderboard.submission``)."""
