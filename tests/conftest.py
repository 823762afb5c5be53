"""Shared fixtures of the project's own tests."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the tests run from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

# leaks: the autouse fixture that fails a test leaving a process, a container or a held uid lock
# verdictlib: the session's gradings of tests/servers (the `verdicts` fixture), shared by modules
pytest_plugins = ["pytester", "leaks", "verdictlib"]

