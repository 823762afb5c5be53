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


class ProbeError(GradingEnvironmentError):
    """A probe could not read what it was asked to observe: the environment's failure, unless the
    check that asked decides otherwise (probes only observe; checks give verdicts)."""


class ProbeInterfered(ProbeError):
    """A probe's helper, which runs as the submission's uid, was killed or stopped `times` times by
    signals the grader did not send: a check that reads through it makes that the student's failure."""

    def __init__(self, pid: int, times: int) -> None:
        self.pid, self.times = pid, times
        super().__init__(f"the helper reading /proc/{pid}/fd was killed or stopped {times} times by signals "
                         "the grader did not send")


class ReportError(GraderError):
    """A report is missing, malformed, or fails its schema."""


class UsageError(GraderError):
    """The caller asked for something that cannot be done (unknown lab, missing directory)."""


class SubmissionTooLarge(UsageError):
    """A lab directory larger than any lab needs: neither copied (local) nor sent (docker); its
    `build` check fails with this message in both isolations."""

    def __init__(self, max_files: int, max_bytes: int) -> None:
        super().__init__(f"the submission holds more than {max_files} files or {max_bytes >> 20} MiB; "
                         "a lab directory needs a few sources, a header and a Makefile")
