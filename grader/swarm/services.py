"""The Swarm objects of one grading: its service's spec, and their removal."""
from __future__ import annotations

import contextlib
import time
from typing import Any

from ..isolation.docker.engine import library_errors

LABEL_BATCH = "labgrade.batch"
NODE_LABEL = "labgrade=grader"
STOP_GRACE_NS = 60_000_000_000  # the task's time to remove its grading container once stopped


def service_spec(*, name: str, labels: dict[str, str], image: str, command: list[str], secret: tuple[str, str],
                 cpus: float, memory: int, away: list[str]) -> dict[str, Any]:
    """The raw spec of a grading's service (the same JSON whatever the SDK's version: 5.0's types
    know nothing of what newer engines accept). `secret`: (id, name); `away`: node ids it must avoid."""
    return {
        "Name": name, "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image, "Command": command, "User": "0:0", "Labels": labels,
                "Env": [f"LABGRADE_IMAGE={image}", "LABGRADE_LOCK_DIR=/host-tmp/labgrade-locks"],
                # the node's engine (the grading container is made there) and its uid locks
                "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"},
                           {"Type": "bind", "Source": "/tmp", "Target": "/host-tmp"}],
                "Secrets": [{"SecretID": secret[0], "SecretName": secret[1],
                             "File": {"Name": "submission", "UID": "0", "GID": "0", "Mode": 0o400}}],
                "StopGracePeriod": STOP_GRACE_NS,
            },
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": [f"node.labels.{NODE_LABEL.replace('=', '==')}"]
                          + [f"node.id!={n}" for n in away]},
            "Resources": {"Reservations": {"NanoCPUs": int(cpus * 1e9), "MemoryBytes": int(memory)}},
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "1"}},
        },
        # One replica that is never restarted: a one-task job. Not mode `replicated-job`: on the
        # engines before Moby 24 (Debian's 20.10) removing such a service leaves its task's
        # container behind, running or exited (moby/moby#44312, #42789).
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def remove_objects(api: Any, services: list[str], secrets: list[str]) -> int:
    """Remove services, then their secrets (refused while a removed service's tasks still hold
    one: tried again for 5 s). Never raises for what is already gone. Returns the API calls made."""
    calls = 0
    for s in services:
        calls += 1
        with contextlib.suppress(*library_errors()):
            api.remove_service(s)
    for s in secrets:
        for _ in range(20):
            calls += 1
            try:
                api.remove_secret(s)
                break
            except library_errors() as e:
                if "not found" in str(e).lower():
                    break
                time.sleep(0.25)
    return calls
