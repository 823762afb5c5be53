"""Lab `ipc`, the log's records: `log-complete` (every line once, in order, within the rule's
second, binary bytes and bursts included, after what the file held) and `log-intact` (no line torn or interleaved)."""
from __future__ import annotations

import threading
import time

from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines, show
from ..harness import Server
from ..verdict import fail
from .common import ECHO_RULE, PATIENCE, Start, state, wait_until
from .ipc_log import (
    LOG,
    LOG_PATIENCE,
    clients_children_ended,
    counts,
    logger_stopped,
    no_log,
    pieces,
    read_log,
    served_lines,
    show_records,
    stalled,
    wait_logged,
)

COMPLETE_RULE = ("every complete line a client sends is appended by the logger to echo.log, exactly once, within 1 s "
                 "of its echo; one client's lines keep their order")


BINARY = bytes(b for b in range(256) if b != ord("\n")) + b"\n"  # every byte value, as `echo` sends


# what echo.log holds when log-complete's server starts: "appended" keeps it, first and whole
SEEDED = b"labgrade: this line was in echo.log before the server started; the logger appends after it\n"


BURST = 16  # round 5: lines of 2000 to 4096 bytes each of clients 1-3 sends in one burst


def round_lines(rnd: int) -> list[list[bytes]]:
    """What each of the 4 clients sends in a round, as lines (with their '\\n')."""
    if rnd < 3:  # a line per client at once
        return [[line] for line in random_lines(4, 20, 100)]
    if rnd == 3:  # client 1: 5 lines in one segment
        return [random_lines(5, 20, 60), [], [], []]
    # clients 1-3: bursts that fill a channel (a 64 KiB pipe, a queue of 10 messages); client 4: byte by byte
    return [random_lines(BURST, 2000, 4096) for _ in range(3)] + [random_lines(3, 20, 40)]


def send_round(clients: list[Client], lines: list[list[bytes]], bytewise: bool) -> list[bytes]:
    """Send each client's lines at once (client 4's byte by byte when `bytewise`); what came back."""
    payloads = [b"".join(ls) for ls in lines]
    slow: list[bytes] = [b""]

    def one_by_one() -> None:
        c = clients[3]
        for line in lines[3]:
            c.send_bytewise(line, gap=0.001)
        slow[0] = c.recv_exactly(len(payloads[3]), PATIENCE)

    if not bytewise:
        return echo_many(clients, payloads, PATIENCE)
    t = threading.Thread(target=one_by_one)  # its own socket: echo_many never touches client 4
    t.start()
    got = echo_many(clients[:3], payloads[:3], PATIENCE * 2)
    t.join()
    return [*got, slow[0]]


STOPPED_MAX = 3.0  # round 5: the logger stays stopped until the children have echoed all or all block, or this


def send_full_channel(s: Server, clients: list[Client], lines: list[list[bytes]]) -> list[bytes]:
    """Round 5 with the logger stopped: the burst (more than a pipe or a queue of 10 holds) fills the
    channel for certain. The logger continues once every client has its echo (each child has then
    tried to send every line: a child that drops a line on a full channel has dropped it) or once the
    children all sleep (blocked on the full channel, as they should be)."""
    out: list[list[bytes]] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            out.append(send_round(clients, lines, bytewise=True))
        except BaseException as e:  # raised again in the check's thread
            error.append(e)

    t = threading.Thread(target=run)
    with logger_stopped(s):
        t.start()
        wait_until(lambda: not t.is_alive(), STOPPED_MAX, give_up=stalled(s, 0.3))
    t.join()
    if error:
        raise error[0]
    return out[0]


def check_log_complete(start: Start) -> None:
    s = start(log=SEEDED)
    clients, greeted = served_lines(s, 4, what="their lines should reach echo.log")
    sent: list[list[bytes]] = [[] for _ in clients]
    rounds = ("a line each", "a line each", "a line each", "client 1 five lines in one segment",
              f"with the logger stopped (SIGSTOP) until the children had echoed all or all slept, clients 1-3 "
              f"{BURST} lines of 2000 to 4096 bytes each in one burst (more than the channel holds), client 4 "
              "three lines byte by byte; then the logger continued (SIGCONT)")
    try:
        for rnd, what in enumerate(rounds):
            lines = round_lines(rnd)
            if rnd == 0:
                lines[0] = [BINARY]  # a line holding NUL and bytes >= 0x80: no string function may log it
            before = len(read_log(s))
            got = send_full_channel(s, clients, lines) if rnd == 4 else send_round(clients, lines, bytewise=False)
            echoed = time.monotonic()
            bad = [i for i in range(4) if got[i] != b"".join(lines[i])]
            if bad:
                fail(f"connected 4 clients; round {rnd + 1}: {what}",
                     f"client {bad[0] + 1} did not get its echo back; {state(s)}", rule=ECHO_RULE)
            new = [(i, k, line) for i, ls in enumerate(lines) for k, line in enumerate(ls)]
            did = (f"connected 4 clients; in {rnd + 1} rounds ({'; '.join(rounds[:rnd + 1])}) each got its echo; "
                   f"after each round read {LOG} until all its lines were there, for at most {LOG_PATIENCE:.0f} s")
            wait_logged(s, [line for _, _, line in new], LOG_PATIENCE - (time.monotonic() - echoed))
            waited = time.monotonic() - echoed
            no_log(s, did, COMPLETE_RULE)
            log = read_log(s)
            n, _ = counts(log, [line for _, _, line in new])
            missing = [(i, k, line) for (i, k, line), c in zip(new, n, strict=True) if c == 0]
            if missing and rnd == 4 and pieces(log[before:], greeted + [line for _, _, line in new]):
                continue  # torn lines, not lost ones: `log-intact`'s to judge; these lines leave the order aside
            if missing:
                # the binary line is named only when it alone is missing: a string function stopped at a NUL
                binary = [m[2] for m in missing] == [BINARY]
                i, k, line = missing[0] if binary else next(m for m in missing if m[2] != BINARY)
                seen = f"client {i + 1}'s line of the {len(BINARY) - 1} byte values but '\\n'," if binary else \
                    f"client {i + 1}'s line {k + 1}, {show(line, 40)},"
                fail(did, f"round {rnd + 1}: {seen} is not in {LOG} {waited:.1f} s after its echo"
                     + (f"; {len(missing)} of the {len(new)} lines of this round are missing" if len(missing) > 1
                        else "") + f"; {LOG} holds {len(log)} bytes; {state(s)}",
                     rule=COMPLETE_RULE,
                     hint=("a line is bytes, NUL and bytes >= 0x80 included: send and write it with its length "
                           "(write, fwrite), not with strlen, fputs or %s" if binary else
                           "each child sends every line it echoes to the logger, which writes it at once (or "
                           "flushes within the second): a line waiting in a stdio buffer is not in the file; "
                           "a child that drops a line on a full channel (O_NONBLOCK, EAGAIN) loses it"))
            for i, ls in enumerate(lines):
                sent[i] += ls
    finally:
        close_all(clients)
    time.sleep(0.2)  # a late second copy has landed
    log = read_log(s)
    everything = [line for mine in sent for line in mine]
    n, first = counts(log, everything)
    twice = [(line, k) for line, k in zip(everything, n, strict=True) if k > 1]
    did = "connected 4 clients; in 5 rounds each sent lines and got their echo; then read echo.log"
    if twice:
        fail(did, f"{len(twice)} of the {len(everything)} lines are in {LOG} more than once, such as "
             f"{show(twice[0][0], 40)} ({twice[0][1]} times)", rule=COMPLETE_RULE,
             hint="send each line once and write what the logger read once: a buffer written again without "
             "being emptied (an offset not reset) repeats old lines")
    for i, mine in enumerate(sent):
        at = [first[everything.index(line)] for line in mine]
        if at != sorted(at):
            fail(did, f"client {i + 1}'s lines are not in {LOG} in the order it sent them", rule=COMPLETE_RULE,
                 hint="a child sends its client's lines in the order it reads them, each in one message")
    if not log.startswith(SEEDED):
        where = log.find(SEEDED)
        fail(f"started the server with one line in {LOG}, {show(SEEDED, 100)}; connected 4 clients, which in 5 "
             f"rounds sent lines and got their echo; then read {LOG}",
             f"{LOG} held a line before the server started; after its 5 rounds, "
             + (f"that line is at byte {where}, not first" if where > 0 else
                f"that line is gone: {LOG} ({len(log)} bytes) starts with {show(log[:40])}"),
             rule=COMPLETE_RULE,
             hint="appended: what echo.log held before the server started stays, first and whole. Open it "
             "with O_WRONLY | O_CREAT | O_APPEND (or fopen mode \"a\"): mode \"w\" and O_TRUNC "
             "empty it, and without O_APPEND the logger writes from offset 0, over what it held")


INTACT_RULE = ("every complete line a client sends (at most 4096 bytes with its '\\n') is appended to echo.log as one "
               "unbroken record: a pipe write of at most PIPE_BUF bytes is atomic, a write per read chunk is not")


INTACT_HINT = ("a child must send the logger whole lines, each in one write (pipe, at most PIPE_BUF = 4096 bytes) or "
               "one message (mq_send); what read returns is not a line: keep it until the '\\n' has come")


def check_log_intact(start: Start) -> None:
    s = start()
    # 1. 8 clients at once, each sending 3 lines byte by byte
    clients, greeted = served_lines(s, 8, what="they then send lines byte by byte, all at the same time")
    lines = [random_lines(3, 20, 40) for _ in clients]
    echoed: list[bytes] = [b""] * len(clients)

    def bytewise(i: int) -> None:
        c = clients[i]
        for line in lines[i]:
            c.send_bytewise(line, gap=0.001)
        echoed[i] = c.recv_exactly(sum(map(len, lines[i])), PATIENCE)

    threads = [threading.Thread(target=bytewise, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_all(clients)
    sent = [line for ls in lines for line in ls]
    for i, ls in enumerate(lines):
        if echoed[i] != b"".join(ls):
            fail("8 clients sent 3 lines each, byte by byte, all at the same time",
                 f"client {i + 1} did not get its lines back; {state(s)}", rule=ECHO_RULE)
    known = greeted + sent
    judge_intact(s, sent, known, "8 clients sent 3 lines each, byte by byte, all at the same time; then read echo.log")
    clients_children_ended(s)
    # 2. bursts: 16 clients at once, each 4 lines of up to 4096 bytes (one of exactly 4096) in one go
    clients = connect_many(s.port, 16)
    bursts = [[random_line(4096), *random_lines(3, 2000, 4096)] for _ in clients]
    payloads = [b"".join(b) for b in bursts]
    got = echo_many(clients, payloads, PATIENCE * 2)
    close_all(clients)
    bad = [i for i in range(len(clients)) if got[i] != payloads[i]]
    if bad:
        fail("16 clients at once each sent 4 lines of 2000 to 4096 bytes in one burst",
             f"{len(bad)} clients did not get their lines back; {state(s)}", rule=ECHO_RULE)
    sent = [line for b in bursts for line in b]
    judge_intact(s, sent, known + sent,
            "16 clients at once each sent 4 lines of 2000 to 4096 bytes (one of exactly 4096 with its '\\n') in "
            "one burst; then read echo.log")


def judge_intact(s: Server, sent: list[bytes], known: list[bytes], did: str) -> None:
    """Fails when lines of `sent` are missing and the log has pieces: records that are no line of `known`
    (every line the check sent, `sent` and those before it)."""
    wait_logged(s, sent, LOG_PATIENCE)
    no_log(s, did, INTACT_RULE)
    log = read_log(s)
    n, _ = counts(log, sent)
    missing = [line for line, k in zip(sent, n, strict=True) if k == 0]
    odd = pieces(log, known)
    # a line missing with no piece of it in the log was lost or not yet written, not torn: `log-complete`'s
    if missing and odd:
        fail(did, f"{len(missing)} of the {len(sent)} lines are not in {LOG} as one unbroken record "
             f"{LOG_PATIENCE:.0f} s after their echo{show_records(odd)}", rule=INTACT_RULE, hint=INTACT_HINT)
