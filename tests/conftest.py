"""Test-wide settings: Hypothesis explores freshly on a developer's machine and replays a fixed
sequence in CI (`CI` set), so a landing is judged on the same examples every time."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("deep", max_examples=5000, print_blob=True)
settings.load_profile(os.environ.get("FLOWD_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))
