"""Paths as the user sees them: in a container (`docker compose run --rm grade`), the host's path of
the bind mount that holds them, asked of the engine."""
from __future__ import annotations

import os
import re
from pathlib import Path


def shown_path(p: Path) -> str:
    """`p` as the user sees it: in a container (`docker compose run --rm grade`), the host's
    path of the bind mount that holds it, when the engine says."""
    host = host_path(p)
    return f"{host} (on the host; {p} in this container)" if host else str(p)


def own_container_id() -> str | None:
    """The id of the container this process runs in, from the engine's bind mounts of
    /etc/hostname and friends in /proc/self/mountinfo; None outside a container."""
    if not Path("/.dockerenv").exists():
        return None
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    m = re.search(r"/containers/([0-9a-f]{64})/", text)
    return m.group(1) if m else None


def host_path(path: Path) -> Path | None:
    """Where `path` of this container is on the engine's host: inside the source of the bind
    mount that holds it, asked of the engine about this very container. None outside a
    container, without an engine, or for a path on no bind mount."""
    cid = own_container_id()
    if cid is None:
        return None
    try:
        from .isolation import docker as dockeriso

        c = dockeriso.client(timeout=10)
        try:
            mounts = c.api.inspect_container(cid).get("Mounts") or []
        finally:
            c.close()
    except Exception:  # only a message depends on it
        return None
    p = Path(os.path.abspath(path))
    found: tuple[Path, Path] | None = None
    for m in mounts:
        dest = Path(m.get("Destination") or "/nonexistent")
        if m.get("Type") == "bind" and m.get("Source") and (p == dest or dest in p.parents) \
                and (found is None or len(dest.parts) > len(found[0].parts)):
            found = (dest, Path(m["Source"]))
    return found[1] / p.relative_to(found[0]) if found else None
