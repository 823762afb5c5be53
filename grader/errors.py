"""One root for every error the grader raises; a few specific kinds beneath it.

Errors of libraries (docker, requests, pexpect, OSError) are converted where they
enter our code, so callers catch `GraderError` and nothing else.
"""


class GraderError(Exception):
    """Root of the grader's errors."""


class BuildError(GraderError):
    """The grader could not run the build at all (not: the student's build failed)."""


class GradingEnvironmentError(GraderError):
    """The machine, not the submission, failed: no free port, TSan cannot start, ...

    A check that raises it is reported with status `error` and is not charged.
    """


class IsolationError(GradingEnvironmentError):
    """The isolation layer (Docker, uid drop, limits) failed."""


class ReportError(GraderError):
    """A report is missing, malformed, or fails its schema."""


class UsageError(GraderError):
    """The caller asked for something that cannot be done (unknown lab, missing directory)."""
