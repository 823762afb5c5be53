"""Grading on a Docker Swarm: `labgrade batch --swarm`.

Modules: `coordinator` (the manager's side: a job per submission, lost attempts submitted again,
results from logs), `services` (a grading's service spec, and removal), `task` (what a task runs
on its node: today's docker isolation), `frames` (the result's framing in the logs). The grading
container is exactly today's (grader.isolation.docker); Swarm only carries the submission to a
node and the result back.
"""
from .coordinator import SECRET_LIMIT, Swarm
from .frames import MalformedResult, decode, encode
from .services import LABEL_BATCH, NODE_LABEL

__all__ = ["LABEL_BATCH", "NODE_LABEL", "SECRET_LIMIT", "MalformedResult", "Swarm", "decode", "encode"]
