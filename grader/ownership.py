"""Who owns a batch's results when it runs as root (in the grader's container, say)."""
from __future__ import annotations

import os
from pathlib import Path

# Whose the results are when the batch runs as root: the owner of --out when that is not root,
# else the owner of the path this names (docker-compose.yml: the class it mounts, which belongs to
# whoever cloned the repository), so that `docker compose run --rm grade` leaves the user's files.
RESULTS_OWNER_ENV = "LABGRADE_RESULTS_OWNER"


def results_owner(out: Path) -> tuple[int, int] | None:
    """(uid, gid) the results should belong to, or None when they stay the batch's own: only a
    batch run as root hands them over, to the owner of `out` or else of $LABGRADE_RESULTS_OWNER,
    whichever first is not root."""
    if os.geteuid() != 0:
        return None
    for p in (str(out), os.environ.get(RESULTS_OWNER_ENV)):
        try:
            st = os.stat(p) if p else None
        except OSError:
            continue
        if st is not None and st.st_uid != 0:
            return st.st_uid, st.st_gid
    return None
