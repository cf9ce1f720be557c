"""perf_analyzer: one bounded measurement, its CSV parsed, and the input files it reads.

Every run is bounded: ``-s 1000 -r N`` turns off perf_analyzer's own stability
search (which on a 2-core machine can loop until its trial limit and then fail),
so each concurrency level costs exactly ``N`` measurement windows and reports
their average. Repetition and medians happen one level up, across server
restarts, where the noise really is. A hard wall-clock timeout kills a run that
hangs.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks._proc import new_session

__all__ = ["PerfResult", "bytes_input_json", "run_perf"]


@dataclass
class PerfResult:
    """One concurrency level of one perf_analyzer run (latencies in milliseconds).

    Attributes:
        ok: False when perf_analyzer failed; ``error`` then says why.
    """

    concurrency: int
    throughput: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    ok: bool = True
    error: str = ""
    cpu: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def bytes_input_json(path: Path, name: str, items: Sequence[bytes]) -> Path:
    """Write perf_analyzer ``--input-data`` JSON: one step per item of a BYTES input.

    A BYTES tensor in ``b64`` form is the tensor's serialized content, i.e. each
    element prefixed with its 4-byte little-endian length; perf_analyzer cycles
    through the steps, so every request carries a different (real) image.
    """
    data = [{name: {"b64": base64.b64encode(struct.pack("<I", len(b)) + b).decode("ascii")}} for b in items]
    path.write_text(json.dumps({"data": data}))
    return path


def _parse_csv(text: str) -> dict[int, PerfResult]:
    out: dict[int, PerfResult] = {}
    for row in csv.DictReader(io.StringIO(text)):
        c = int(row["Concurrency"])
        out[c] = PerfResult(
            concurrency=c,
            throughput=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / 1000,
            p90_ms=float(row["p90 latency"]) / 1000,
            p95_ms=float(row["p95 latency"]) / 1000,
            p99_ms=float(row["p99 latency"]) / 1000,
        )
    return out


def run_perf(
    perf_analyzer: Path,
    model: str,
    port: int,
    concurrency: Sequence[int],
    csv_path: Path,
    *,
    interval_ms: int = 2000,
    windows: int = 3,
    shape: str | None = None,
    input_data: Path | None = None,
    batch_size: int = 1,
    timeout_s: float | None = None,
) -> list[PerfResult]:
    """Drive ``model`` at each concurrency in turn (one perf_analyzer process per level).

    One process per level keeps a failure at one level from losing the others,
    and makes the levels' order explicit.

    Returns:
        one :class:`PerfResult` per level, ``ok=False`` with the error text on failure.
    """
    results: list[PerfResult] = []
    for c in concurrency:
        argv = [str(perf_analyzer), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "grpc",
                "--concurrency-range", str(c), "--measurement-interval", str(interval_ms),
                "-s", "1000", "-r", str(windows), "-b", str(batch_size), "-f", str(csv_path)]
        if shape:
            argv += ["--shape", shape]
        if input_data is not None:
            argv += ["--input-data", str(input_data)]
        limit = timeout_s or (interval_ms / 1000 * (windows + 3) + 30)
        csv_path.unlink(missing_ok=True)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, preexec_fn=new_session)
        except subprocess.TimeoutExpired:
            results.append(PerfResult(c, ok=False, error=f"perf_analyzer timed out after {limit:.0f} s"))
            continue
        parsed = _parse_csv(csv_path.read_text()) if proc.returncode == 0 and csv_path.exists() else {}
        if c in parsed:
            results.append(parsed[c])
        else:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
            results.append(PerfResult(c, ok=False, error=f"rc={proc.returncode}: " + " | ".join(tail)))
    return results
