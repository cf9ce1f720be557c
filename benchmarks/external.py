"""Figure 5 and friends: the benchmarks other parts of the project own, run and folded in.

``compile_bench.py`` (compile time, 10 -> 10,000 nodes), ``ops_bench.py`` (kernel
costs) and ``runtime_bench.py`` (scheduler overheads) each write their own JSON
into ``benchmarks/out/``. They are run here as they are, each in its own
process with a time limit; whichever is missing is skipped and said so. Their
JSON is read back by ``report.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from benchmarks._common import Settings, log
from benchmarks._servers import BENCH, OUT, REPO

__all__ = ["BENCHES", "run"]

BENCHES: dict[str, dict[str, Any]] = {
    "compile_bench.py": {"json": "compile.json", "quick": ["--sizes", "10", "100", "1000", "--repeat", "3"],
                         "full": ["--sizes", "10", "100", "1000", "10000", "--repeat", "3"], "timeout": 420},
    "ops_bench.py": {"json": "ops.json", "quick": ["--quick"], "full": [], "timeout": 300},
    "runtime_bench.py": {"json": "runtime.json", "quick": ["--quick"], "full": [], "timeout": 300},
}


def _supports(script: str, flag: str) -> bool:
    try:
        out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                             timeout=60, cwd=REPO)
    except subprocess.TimeoutExpired:
        return False
    return flag in out.stdout


def run(settings: Settings) -> dict[str, Any]:
    """Run each present benchmark; return script -> {ok, seconds, json, error}."""
    status: dict[str, Any] = {}
    for script, how in BENCHES.items():
        path = BENCH / script
        if not path.exists():
            status[script] = {"ok": False, "skipped": True, "error": "not in the repository yet"}
            settings.notes.append(f"{script}: not in the repository yet, skipped")
            continue
        args = list(how["quick"] if settings.quick else how["full"])
        if args and args[0].startswith("--") and args[0] not in ("--sizes",) and not _supports(script, args[0]):
            args = []
        log(f"external: {script} {' '.join(args)}")
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                                  timeout=how["timeout"], cwd=REPO)
            ok = proc.returncode == 0
            error = "" if ok else (proc.stdout + proc.stderr).strip()[-1500:]
        except subprocess.TimeoutExpired:
            ok, error = False, f"timed out after {how['timeout']} s"
        out_json = OUT / how["json"]
        fresh = out_json.exists() and out_json.stat().st_mtime >= t0 - 1
        status[script] = {"ok": ok, "seconds": round(time.monotonic() - t0, 1), "json": str(out_json),
                          "fresh": fresh, "error": error}
        if ok:
            log(f"  {script}: ok in {status[script]['seconds']} s")
        elif fresh:  # e.g. compile_bench.py exits 1 when a target is missed, after writing its JSON
            log(f"  {script}: exit status non-zero (a target missed?) in {status[script]['seconds']} s; JSON written")
            settings.notes.append(f"{script} exited non-zero after writing {how['json']} (it does so when one of "
                                  "its own targets is missed)")
        else:
            log(f"  {script}: FAILED in {status[script]['seconds']} s")
            settings.notes.append(f"{script} failed: {error.splitlines()[-1] if error else '?'}")
    return status
