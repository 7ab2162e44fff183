"""Where the shared test data lives: the capture corpus and the MaxMind test databases.

Looked for in `FLOWD_CORPUS` / `FLOWD_GEOIP_DIR`, then `../shared/` next to the repository, then
the workplace's `/work/shared/`. `tests/test_shared_data.py` fails (rather than letting the
corpus tests skip) when neither is found.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find(name: str, variable: str) -> Path:
    candidates = [os.environ.get(variable), REPO_ROOT.parent / "shared" / name, Path("/work/shared") / name]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return REPO_ROOT.parent / "shared" / name


CORPUS = _find("corpus", "FLOWD_CORPUS")
GEOIP = _find("geoip", "FLOWD_GEOIP_DIR")
