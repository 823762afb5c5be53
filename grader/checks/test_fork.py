"""Lab `fork`: a process-based concurrent echo server."""
from __future__ import annotations

from . import common, processes

LAB = "fork"

(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference, test_memory) = common.shared_checks(LAB)
(test_process_per_client, test_zombies, test_child_exit, test_listenfd_closed,
 test_accept_eintr) = processes.process_checks(LAB)
