"""The credentials of the scripted scenario call tests: moved here from test_scenarios_calls.py so
that no test module imports another."""

from __future__ import annotations

CREDENTIALS = {"user": "alice", "password": "s3cret"}
