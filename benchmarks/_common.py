"""Settings shared by every section, and medians over repeated perf_analyzer runs."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._perf import PerfResult, run_perf
from benchmarks._proc import Managed, cpu_sample, foreign_load
from benchmarks._servers import OUT, Peers

__all__ = [
    "Settings", "Trial", "aggregate", "interleaved", "log", "measure", "quiet_gate", "ratio", "save", "section_timer",
    "warmup",
]


@dataclass
class Settings:
    """How long and how often to measure; ``quick`` trades repeats for time.

    Attributes:
        reps: server restarts per contestant (medians are over these).
        interval_ms: perf_analyzer measurement window.
        windows: windows per concurrency level (their average is one sample).
        concurrency: levels of the side-by-side comparison.
    """

    quick: bool
    peers: Peers
    logs: Path
    reps: int = 3
    interval_ms: int = 1500
    windows: int = 3
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    out: Path = OUT
    notes: list[str] = field(default_factory=list)
    quiet_budget_s: float = 90.0
    """Total seconds the run may wait for other jobs to quiet down before windows (see :func:`quiet_gate`)."""
    quiet_waited_s: float = 0.0

    @classmethod
    def make(cls, quick: bool, peers: Peers, logs: Path, reps: int | None = None) -> Settings:
        if quick:
            s = cls(quick=True, peers=peers, logs=logs, reps=1, interval_ms=1000, windows=3,
                    concurrency=(1, 4, 16), quiet_budget_s=30.0)
        else:
            s = cls(quick=False, peers=peers, logs=logs)
        if reps is not None:
            s.reps = reps
        return s


@dataclass
class Trial:
    """What one contestant produced in one repetition."""

    contestant: str
    rep: int
    results: list[PerfResult]


def log(message: str) -> None:
    """Progress on stderr, with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


QUIET_CORES = 0.3
"""Other jobs using less than this many cores counts as quiet."""


def quiet_gate(settings: Settings, max_wait: float = 20.0) -> float:
    """Wait (within the run's budget) until other jobs use < ``QUIET_CORES``; return the load seen last.

    Other people's jobs on a shared machine come in bursts (a test suite, a
    training epoch); starting a window in a lull loses less of it to them. The
    wait is bounded per call and per run, so the run's length stays bounded; when
    the budget is spent, windows start whatever the load.
    """
    t0 = time.monotonic()
    load = foreign_load()
    while load >= QUIET_CORES and settings.quiet_waited_s < settings.quiet_budget_s \
            and time.monotonic() - t0 < max_wait:
        time.sleep(0.7)
        settings.quiet_waited_s += 1.0
        load = foreign_load()
    return load


def measure(settings: Settings, server: Managed, model: str, concurrency: Sequence[int], tag: str, *,
            shape: str | None = None, input_data: Path | None = None) -> list[PerfResult]:
    """perf_analyzer against ``server``'s gRPC port at each level (bounded, see ``_perf``)."""
    csv_path = settings.logs / f"{tag}.csv"
    results: list[PerfResult] = []
    for c in concurrency:
        before = quiet_gate(settings)
        sample = cpu_sample(server)
        (r,) = run_perf(settings.peers.perf_analyzer, model, server.ports["grpc"], (c,), csv_path,
                        interval_ms=settings.interval_ms, windows=settings.windows, shape=shape,
                        input_data=input_data)
        r.cpu = {**sample.stop(), "foreign_before": before}
        results.append(r)
        cpu = f"[server {r.cpu['server_cores']:.2f} client {r.cpu['client_cores']:.2f} " \
              f"others {r.cpu['foreign_cores']:.2f} cores]"
        if r.ok:
            log(f"  {tag} c={c}: {r.throughput:,.0f} infer/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms {cpu}")
        else:
            log(f"  {tag} c={c}: FAILED {r.error}")
    return results


def warmup(settings: Settings, server: Managed, model: str, concurrency: int, tag: str, *,
           shape: str | None = None, input_data: Path | None = None) -> None:
    """One short, discarded perf_analyzer window: connections, caches, adaptive dispatch settle."""
    run_perf(settings.peers.perf_analyzer, model, server.ports["grpc"], (concurrency,),
             settings.logs / f"{tag}-warmup.csv", interval_ms=1000, windows=1, shape=shape, input_data=input_data)


def interleaved(settings: Settings, starters: dict[str, Callable[[str], Managed]], model: str,
                levels: Sequence[int], tag: str, *, shape: str | None = None,
                input_data: Path | None = None) -> list[Trial]:
    """Every contestant's server up at once; per level, the contestants take turns.

    Per repetition, every server is (re)started, warmed up, then for each
    concurrency level each contestant is measured in turn, the order rotating with
    the repetition and the level. A/B/C turns last one perf_analyzer run (a few
    seconds), so a burst of other jobs on a shared machine lands on all contestants
    alike instead of on whichever one happened to be running; idle servers use no CPU
    to speak of (their use is counted under "others").
    """
    names = list(starters)
    trials: list[Trial] = []
    for rep in range(settings.reps):
        servers: dict[str, Managed] = {}
        results: dict[str, list[PerfResult]] = {n: [] for n in names}
        try:
            for who in names:
                log(f"{tag} rep {rep + 1}/{settings.reps}: starting {who}")
                servers[who] = starters[who](f"{tag}-{who}-{rep}")
            for who in names:
                warmup(settings, servers[who], model, max(levels), f"{tag}-{who}-{rep}", shape=shape,
                       input_data=input_data)
            for i, c in enumerate(levels):
                k = (rep + i) % len(names)
                for who in names[k:] + names[:k]:
                    results[who] += measure(settings, servers[who], model, (c,), f"{tag}-{who}-{rep}", shape=shape,
                                            input_data=input_data)
        finally:
            for server in servers.values():
                server.stop()
        trials += [Trial(who, rep, results[who]) for who in names]
        time.sleep(1.0)
    return trials


def median(values: list[float | None]) -> float | None:
    """The median of the known values (``None`` for a failed measurement is skipped)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(x: float | None, digits: int = 0, unit: str = "") -> str:
    """A number for a report or a log line: thousands separated, ``—`` when unknown."""
    if x is None:
        return "—"
    return f"{x:,.{digits}f}{unit}"


def aggregate(trials: list[Trial]) -> dict[str, dict[int, dict[str, Any]]]:
    """contestant -> concurrency -> medians of throughput/p50/p99 and every sample."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for trial in trials:
        for r in trial.results:
            cell = out.setdefault(trial.contestant, {}).setdefault(
                r.concurrency, {"throughput": [], "p50_ms": [], "p99_ms": [], "server_cores": [],
                                "foreign_cores": [], "cpu_ms_per_req": [], "failures": [], "reps": []})
            if r.ok:
                cell["reps"].append(trial.rep)
                cell["throughput"].append(r.throughput)
                cell["p50_ms"].append(r.p50_ms)
                cell["p99_ms"].append(r.p99_ms)
                cell["server_cores"].append(r.cpu.get("server_cores", 0.0))
                cell["foreign_cores"].append(r.cpu.get("foreign_cores", 0.0))
                if r.throughput > 0 and "server_cores" in r.cpu:
                    cell["cpu_ms_per_req"].append(r.cpu["server_cores"] / r.throughput * 1000)
            else:
                cell["failures"].append(r.error)
    for per_c in out.values():
        for cell in per_c.values():
            keys = ("throughput", "p50_ms", "p99_ms", "server_cores", "foreign_cores", "cpu_ms_per_req")
            cell["samples"] = {k: list(cell[k]) for k in keys}
            for k in keys:
                cell[k] = median(cell[k])
    return out


def paired_ratio(table: dict[str, dict[Any, dict[str, Any]]], a: str, b: str, c: Any) -> float | None:
    """Median over repetitions of a's throughput / b's, each pair measured in the same repetition.

    Contestants of one repetition take turns within seconds of each other, while
    repetitions are minutes apart and this machine's speed drifts in between: a
    ratio within a repetition cancels the drift, a ratio of medians does not.
    Falls back to the ratio of medians when no repetition has both.
    """
    cell_a, cell_b = table.get(a, {}).get(c), table.get(b, {}).get(c)
    if not cell_a or not cell_b:
        return None
    samples_a, samples_b = cell_a["samples"]["throughput"], cell_b["samples"]["throughput"]
    reps_a = cell_a.get("reps") or (list(range(len(samples_a))) if "reps" not in cell_a else [])
    reps_b = cell_b.get("reps") or (list(range(len(samples_b))) if "reps" not in cell_b else [])
    by_rep_b = dict(zip(reps_b, samples_b))
    pairs = [x / by_rep_b[r] for r, x in zip(reps_a, samples_a) if by_rep_b.get(r)]
    if not pairs:
        return ratio(cell_a["throughput"], cell_b["throughput"])
    return median(pairs)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` when both are known and ``b`` is not zero."""
    return a / b if a is not None and b else None


def save(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/out/<name>.json`` with the machine it ran on."""
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": _cpus(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


@contextmanager
def section_timer(name: str) -> Iterator[Callable[[], float]]:
    """Log a section's start and end; yields a function that returns the elapsed seconds."""
    t0 = time.monotonic()
    log(f"== {name}")
    yield lambda: time.monotonic() - t0
    log(f"== {name}: done in {time.monotonic() - t0:.0f} s")
