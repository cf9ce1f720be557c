"""``python -m benchmarks``: measure every figure, then write RESULTS.md and the plots.

Usage::

    python -m benchmarks                 # full: about 25 minutes on the 2-core machine
    python -m benchmarks --quick         # about 5 minutes: fewer repeats, levels and variants
    python -m benchmarks --only protocol side_by_side
    python -m benchmarks --report-only   # re-render RESULTS.md from benchmarks/out/*.json

Servers are started and stopped here, one at a time, on free 127.0.0.1 ports;
whatever is still running when the run ends (or is interrupted) is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("limit", "protocol", "side_by_side", "batching", "external")


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections; return 0 when every section ran (targets missed or not)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 5 minutes instead of about 25")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="skip these sections")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default: 3, quick: 1)")
    parser.add_argument("--detect-spec", help="the detect spec (default: pipelines/detect.yaml)")
    parser.add_argument("--note", action="append", default=[], help="a line to add to RESULTS.md (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="only re-render RESULTS.md and the plots")
    parser.add_argument("--no-boost", action="store_true",
                        help="do not raise the scheduling priority of the servers and perf_analyzer")
    parser.add_argument("--keep-logs", action="store_true", help="keep server logs and perf CSVs (path printed)")
    args = parser.parse_args(argv)

    from benchmarks import report
    from benchmarks._common import Settings, log, section_timer
    from benchmarks._servers import OUT, ensure_peers

    meta_path = OUT / "run.json"
    if args.report_only:
        _rejudge()
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        print(report.write(meta))
        return 0

    from benchmarks._proc import BOOST

    if args.no_boost:
        BOOST["nice"] = None
    t0 = time.monotonic()
    report.ensure_matplotlib()
    peers = ensure_peers()
    logs = Path(tempfile.mkdtemp(prefix="dagserve-bench-"))
    settings = Settings.make(args.quick, peers, logs, args.reps)
    wanted = [s for s in (args.only or SECTIONS) if s not in args.skip]
    settings.notes.extend(args.note)
    log(f"benchmarks: {'quick' if args.quick else 'full'} run of {', '.join(wanted)}; logs in {logs}")

    from benchmarks import _detect

    setup = None
    spec = _detect.find_spec(args.detect_spec)
    if any(s in wanted for s in ("limit", "side_by_side", "batching")):
        if spec is None:
            settings.notes.append("detect: pipelines/detect.yaml does not exist yet; limit and batching skipped")
        else:
            try:
                setup = _detect.load(spec, logs, count=32 if args.quick else 64)
            except Exception as exc:  # a missing model, a spec that does not compile: say so, measure the rest
                settings.notes.append(f"detect: cannot use {spec}: {exc}")
    failures: list[str] = []

    def section(name: str, fn: object) -> None:
        with section_timer(name):
            try:
                fn()  # type: ignore[operator]
            except Exception as exc:
                import traceback

                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                settings.notes.append(f"section {name} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")

    if "limit" in wanted and setup is not None:
        from benchmarks import limit

        section("limit", lambda: limit.run(settings, setup))
    if "protocol" in wanted:
        from benchmarks import protocol

        section("protocol", lambda: protocol.run(settings))
    if "side_by_side" in wanted:
        from benchmarks import side_by_side

        section("side_by_side", lambda: side_by_side.run(settings, setup))
    if "batching" in wanted and setup is not None:
        from benchmarks import batching

        section("batching", lambda: batching.run(settings, setup))
    if "external" in wanted:
        from benchmarks import external

        section("external", lambda: external.run(settings))

    meta = {"quick": args.quick, "reps": settings.reps, "sections": wanted, "notes": settings.notes,
            "when": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": report.git_commit(),
            "seconds": time.monotonic() - t0,
            "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "detect_spec": str(spec) if spec else None, "boost_nice": BOOST["nice"],
            "quiet_waited_s": round(settings.quiet_waited_s), "quiet_budget_s": settings.quiet_budget_s}
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    path = report.write(meta)
    log(f"benchmarks: wrote {path} in {(time.monotonic() - t0) / 60:.1f} min")
    if args.keep_logs:
        log(f"logs kept in {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    for failure in failures:
        print(f"benchmarks: section failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _rejudge() -> None:
    """Recompute ratios and verdicts of the saved figures 2 and 3 from their raw samples (current rules)."""
    from benchmarks import protocol, side_by_side
    from benchmarks._common import save
    from benchmarks._servers import OUT

    path = OUT / "protocol.json"
    if path.exists():
        data = json.loads(path.read_text())
        protocol.judge(data)
        save("protocol", data)
    path = OUT / "side_by_side.json"
    if path.exists():
        data = json.loads(path.read_text())
        for name in ("add_mul", "detect"):
            section = data.get(name)
            if section:
                data[name] = side_by_side.judge(name, section["results"], list(section["results"]["dagserve"]),
                                                section["judged_from"])
        save("side_by_side", data)


if __name__ == "__main__":
    raise SystemExit(main())
