"""`labgrade`: a thin command line over grader.run.grade and grader.batch.run_batch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import catalogue
from .errors import GraderError, UsageError

EXIT_GRADED, EXIT_UNGRADABLE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def _ids(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def parser() -> argparse.ArgumentParser:
    labs = list(catalogue.LABS)
    p = argparse.ArgumentParser(prog="labgrade", description=f"Grade concurrent echo servers ({', '.join(labs)}).")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade one lab directory")
    g.add_argument("lab", choices=labs)
    g.add_argument("dir", nargs="?", default=".", type=Path)
    g.add_argument("--json", type=Path, help="write the summary JSON here")
    g.add_argument("--gradescope", type=Path, help="write Gradescope's results.json here")
    g.add_argument("--isolation", choices=["local", "docker"], default="local")
    g.add_argument("--only", help="comma-separated check ids")
    g.add_argument("--visible-only", action="store_true", help="only the checks students see (make check)")
    g.add_argument("--reference-root", type=Path, help="directory holding reference/<lab> (default: "
                   "$LABGRADE_REFERENCE_ROOT or the source checkout)")
    g.add_argument("--extra-checks", type=Path, help="a directory of the instructor's own (hidden) check modules")
    g.add_argument("--quiet", action="store_true", help="no table, only the files asked for")
    g.add_argument("--seed", type=int, help="replay the workload of the grading whose summary records this seed")
    b = sub.add_parser("batch", help="grade ROOT/<student>/<lab>/ for every student")
    b.add_argument("root", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--labs", help=f"comma-separated labs to grade (default: all, {','.join(labs)})")
    b.add_argument("--jobs", type=int, default=0, help="parallel gradings (default: the number of cores; "
                   "with --swarm, what the grading nodes hold)")
    b.add_argument("--isolation", choices=["local", "docker", "auto"], default="auto")
    b.add_argument("--force", action="store_true", help="regrade submissions already graded")
    b.add_argument("--reference-root", type=Path)
    b.add_argument("--extra-checks", type=Path, help="a directory of the instructor's own (hidden) check modules")
    b.add_argument("--repeat", type=int, default=1, help="grade every submission N times (each with its own seed); "
                   "writes flicker.csv (what differed) and records the median-score grading")
    b.add_argument("--roster", type=Path, help="roster.csv (directory,name,sis_id[,login,section,canvas_id]): "
                   "names and SIS ids in gradebook.csv, a copy kept for `labgrade export canvas`")
    b.add_argument("--deadline", help="submissions are git repositories: grade each lab at its last commit at or "
                   "before this time (ISO 8601, e.g. 2026-12-10T23:59; local time without an offset)")
    b.add_argument("--late-days", type=Path, help="with --deadline: CSV of directory,late_days[,extension_days]: "
                   "one pool of whole days per student, spent lab after lab on commits after the deadline")
    b.add_argument("--swarm", action="store_true", help="grade on the Docker Swarm this engine manages, on its nodes "
                   "labelled labgrade=grader, each in today's docker isolation (README: Grade on a cluster)")
    b.add_argument("--swarm-cpus", type=float, default=1.0, help="with --swarm: CPUs reserved per grading on a node "
                   "(default 1; with the node's memory and 2 GiB a grading, it caps a node's gradings at once)")
    b.add_argument("--fake", type=float, metavar="SECONDS", help="with --swarm: simulate, every grading a canned "
                   "summary after SECONDS, through the real Swarm path (to size a cluster)")
    t = sub.add_parser("swarm-task", help="(run by --swarm in a Swarm task: grade the task's secret on its node)")
    t.add_argument("lab", choices=labs)
    t.add_argument("--secret", type=Path, required=True)
    t.add_argument("--token", required=True)
    t.add_argument("--fake", type=float)
    e = sub.add_parser("export", help="a batch's results in another system's import format (canvas)")
    e.add_argument("format", choices=["canvas"])
    e.add_argument("results", type=Path, help="a `labgrade batch --out` directory")
    e.add_argument("--out", type=Path, required=True, help="the CSV to write")
    e.add_argument("--roster", type=Path, help="default: the roster the batch kept (RESULTS/roster.csv)")
    e.add_argument("--assignment", action="append", default=[], metavar="LAB=NAME",
                   help="the Canvas assignment a lab's column goes to (default: `labgrade LAB`, a new one); "
                        "repeat per lab; an existing assignment is named as Canvas exports it, `NAME (ID)`")
    m = sub.add_parser("similarity", help="rank pairs of a lab's submissions by shared code (copydetect); "
                       "changes no score")
    m.add_argument("root", type=Path, help="ROOT/<student>/<lab>/, as for batch")
    m.add_argument("--lab", choices=labs, required=True)
    m.add_argument("--out", type=Path, required=True, help="where similarity.html and pairs.csv go")
    m.add_argument("--skeleton", type=Path, help="the starter code, never counted (default: assignments/LAB)")
    m.add_argument("--archive", type=Path, action="append", default=[],
                   help="a past term's ROOT (ARCHIVE/<student>/<lab>/), compared too; repeatable")
    m.add_argument("--top", type=int, default=50, help="pairs written to pairs.csv (default 50)")
    m.add_argument("--graded", type=Path, metavar="RESULTS",
                   help="compare what batch graded: the commit each summary in RESULTS records (--deadline)")
    h = sub.add_parser("handout", help="write the student bundle: assignments, workspace image, compose file, "
                       "GitHub Classroom workflow (no reference, no hidden checks)")
    h.add_argument("out", type=Path)
    h.add_argument("--source", type=Path, help="the course repository (default: this grader's checkout, or .)")
    h.add_argument("--force", action="store_true", help="replace an earlier bundle in OUT")
    z = sub.add_parser("gradescope", help="build a Gradescope autograder zip for one lab")
    z.add_argument("lab", choices=labs)
    z.add_argument("--out", type=Path, required=True, help="the zip to write (e.g. autograder.zip)")
    z.add_argument("--source", type=Path, help="the course repository (default: this grader's checkout, or .)")
    z.add_argument("--reference-root", type=Path, help="directory holding reference/<lab> (default: "
                   "$LABGRADE_REFERENCE_ROOT or the source checkout)")
    z.add_argument("--extra-checks", type=Path, help="the instructor's hidden check modules, graded on Gradescope")
    z.add_argument("--timeout", type=float, default=540.0, help="seconds one grading may take (default 540)")
    d = sub.add_parser("diff", help="what a regrade changed between two batch outputs (exit 1 when anything did)")
    d.add_argument("old", type=Path, help="the earlier `labgrade batch --out` directory")
    d.add_argument("new", type=Path, help="the later one")
    d.add_argument("--csv", type=Path, help="also write every change here")
    c = sub.add_parser("classroom", help="GitHub Classroom: points of graded labs (`Points N/M`, reporter output)")
    c.add_argument("labs", nargs="+", choices=labs)
    c.add_argument("--results-dir", type=Path, required=True, help="holds LAB.json written by `labgrade grade --json`")
    c.add_argument("--check", action="store_true", help="exit 1 below full marks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "grade":
            return _grade(args)
        if args.command == "swarm-task":
            from .swarm.task import run_task

            return run_task(args.lab, args.secret, args.token, args.fake)
        if args.command == "handout":
            return _handout(args)
        if args.command == "gradescope":
            return _gradescope(args)
        if args.command == "diff":
            from .diff import run_diff

            return run_diff(args.old, args.new, args.csv)
        if args.command == "similarity":
            from .similarity import run_similarity

            return run_similarity(args.root, args.lab, args.out, args.skeleton, args.archive, args.top,
                                  args.graded)
        if args.command == "export":
            from .roster import export_canvas

            return export_canvas(args.results, args.out, args.roster, args.assignment)
        if args.command == "classroom":
            from .handout import classroom_report

            return classroom_report(args.labs, args.results_dir, check=args.check)
        from .batch import run_batch

        return run_batch(root=args.root, out=args.out, labs=_ids(args.labs) or [], jobs=args.jobs,
                         isolation=args.isolation, force=args.force, reference_root=args.reference_root,
                         extra_checks=args.extra_checks, repeat=args.repeat, roster=args.roster,
                         deadline=args.deadline, late_days=args.late_days, swarm=args.swarm, fake=args.fake,
                         swarm_cpus=args.swarm_cpus)
    except UsageError as e:
        print(f"labgrade: {e}", file=sys.stderr)
        return EXIT_USAGE
    except GraderError as e:
        print(f"labgrade: could not grade: {e}", file=sys.stderr)
        return EXIT_UNGRADABLE
    except KeyboardInterrupt:
        print("labgrade: interrupted", file=sys.stderr)
        return 130


def _grade(args: argparse.Namespace) -> int:
    from .atomic import write_json
    from .report import gradescope, render
    from .run import grade

    summary = grade(lab=args.lab, submission=args.dir, isolation=args.isolation, only=_ids(args.only),
                    visible_only=args.visible_only, reference_root=args.reference_root,
                    extra_checks=args.extra_checks, seed=args.seed)
    if args.json:
        summary.write(args.json)
    if args.gradescope:
        write_json(args.gradescope, gradescope(summary))
    if not args.quiet:
        rerun = f"labgrade grade {args.lab} {args.dir}"
        render(summary, rerun=rerun)
    return EXIT_PARTIAL if summary.environment_errors else EXIT_GRADED


def _handout(args: argparse.Namespace) -> int:
    import time

    from .handout import build_handout

    t0 = time.monotonic()
    files = build_handout(args.out, source=args.source, force=args.force)
    print(f"Wrote the student bundle to {args.out} ({len(files)} files, {time.monotonic() - t0:.1f} s): "
          f"assignments/, docker-compose.yml ({', '.join(catalogue.LABS)}), images/ (the workspace image), README.md, "
          ".github/workflows/classroom.yml. No reference, no hidden checks.")
    return EXIT_GRADED


def _gradescope(args: argparse.Namespace) -> int:
    import time

    from .gradescope_zip import build_zip
    from .handout import find_source_root

    t0 = time.monotonic()
    root = find_source_root(args.source)
    if (root / "grader" / "checks" / "hidden").is_dir() and args.extra_checks is None:
        print("labgrade: grader/checks/hidden/ is not packaged into the grader's wheel: pass it with "
              "--extra-checks grader/checks/hidden to grade with it on Gradescope", file=sys.stderr)
    names = build_zip(args.lab, args.out, source=root, reference_root=args.reference_root,
                      extra_checks=args.extra_checks, timeout=args.timeout)
    size = args.out.stat().st_size
    print(f"Wrote {args.out} ({len(names)} files, {size / 1024:.0f} KiB, {time.monotonic() - t0:.1f} s) for lab "
          f"{args.lab}. On Gradescope: a programming assignment, autograder zip upload, base image Ubuntu 22.04 "
          "or newer; students submit their lab directory's files (or a folder named after the lab).")
    return EXIT_GRADED
