"""``benchmarks/RESULTS.md`` and the PNG plots, from the JSON in ``benchmarks/out/``.

Kept apart from the measuring, so a report can be re-rendered (``python -m
benchmarks --report-only``) without measuring again. Every section is optional:
whatever JSON is there is reported, whatever is missing is said to be missing.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import fmt as _f
from benchmarks._servers import BENCH, OUT, REPO

__all__ = ["ensure_matplotlib", "git_commit", "write"]

RESULTS = BENCH / "RESULTS.md"
CONTESTANT_COLOURS = {"dagserve": "#1f77b4", "triton-1": "#ff7f0e", "triton-2": "#d62728", "bare": "#2ca02c",
                      "triton": "#ff7f0e"}


def ensure_matplotlib() -> bool:
    """Import matplotlib, installing it into this environment with pip if it is missing."""
    try:
        import matplotlib
    except ImportError:
        print("benchmarks: installing matplotlib into this environment (pip)", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], timeout=600)
        if proc.returncode != 0:
            return False
    import matplotlib

    matplotlib.use("Agg")
    return True


def _load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data


def _cell(table: dict[Any, Any], c: int) -> dict[str, Any]:
    """The cell of concurrency ``c`` (JSON keys are strings, fresh results ints)."""
    cell = table.get(str(c)) or table.get(c) or {}
    return dict(cell)


def _yes(ok: bool | None) -> str:
    return "—" if ok is None else ("**yes**" if ok else "**no**")


def git_commit() -> str:
    """The short hash of the checkout (what a run measured; saved in out/run.json)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# -- plots ---------------------------------------------------------------------------------------


def _plot_side_by_side(data: dict[str, Any], pipeline: str) -> str | None:
    import matplotlib.pyplot as plt

    section = data.get(pipeline)
    if not section:
        return None
    levels = data["levels"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for who, table in section["results"].items():
        tput = [_cell(table, c).get("throughput") for c in levels]
        p99 = [_cell(table, c).get("p99_ms") for c in levels]
        colour = CONTESTANT_COLOURS.get(who)
        ax1.plot(levels, tput, marker="o", label=who, color=colour)
        ax2.plot(levels, p99, marker="o", label=who, color=colour)
    for ax, title in ((ax1, "throughput (infer/s)"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (perf_analyzer)")
        ax.set_title(f"{pipeline}: {title}")
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend()
    fig.tight_layout()
    name = f"side_by_side_{pipeline}.png"
    fig.savefig(BENCH / name, dpi=90)
    plt.close(fig)
    return name


def _plot_limit(limit: dict[str, Any], sbs: dict[str, Any] | None) -> str:
    import matplotlib.pyplot as plt

    costs = limit["costs"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    bottom = 0.0
    for name, stage in costs["stages"].items():
        ms = stage["cpu_s"] * 1000
        ax1.bar(["CPU per image"], [ms], bottom=bottom, label=f"{name} {ms:.2f} ms")
        bottom += ms
    ax1.set_ylabel("ms of CPU per image")
    ax1.set_title("detect: cost of each stage, alone")
    ax1.legend(fontsize=8)
    bars = {"ideal\n(2 cores)": costs["ideal_throughput"]}
    if limit.get("parallel"):
        bars["in-process\n2 threads"] = limit["parallel"]["throughput"]
    if limit.get("runtime"):
        bars["runtime\nin-process"] = limit["runtime"]["throughput"]
    bars["dagserve"] = limit.get("throughput") or 0.0
    if sbs and sbs.get("detect"):
        section = sbs["detect"]
        for who in ("triton-1", "triton-2"):
            table = section["results"].get(who, {})
            best = max((_cell(table, c).get("throughput") or 0.0 for c in sbs["levels"]), default=0.0)
            bars[who] = best
    palette = {"ideal\n(2 cores)": "#7f7f7f", "in-process\n2 threads": "#bcbd22", "runtime\nin-process": "#17becf",
               **CONTESTANT_COLOURS}
    ax2.bar(list(bars), list(bars.values()), color=[palette.get(k, "#333333") for k in bars])
    for i, v in enumerate(bars.values()):
        ax2.text(i, v, f"{v:.0f}\n({v / costs['ideal_throughput']:.2f})", ha="center", va="bottom", fontsize=8)
    ax2.set_ylabel("images/s (fraction of ideal)")
    ax2.set_title("detect at saturation")
    ax2.set_ylim(0, costs["ideal_throughput"] * 1.25)
    fig.tight_layout()
    fig.savefig(BENCH / "limit.png", dpi=90)
    plt.close(fig)
    return "limit.png"


def _plot_protocol(proto: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    levels = proto["levels"]
    who = list(proto["results"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(who)
    for i, w in enumerate(who):
        values = [_cell(proto["results"][w], c).get("throughput") or 0 for c in levels]
        xs = [j + i * width for j in range(len(levels))]
        ax.bar(xs, values, width, label=w, color=CONTESTANT_COLOURS.get(w))
    ax.set_xticks([j + width * (len(who) - 1) / 2 for j in range(len(levels))], [f"c={c}" for c in levels])
    ax.set_ylabel("infer/s")
    ax.set_title("identity: protocol floor")
    ax.legend()
    fig.tight_layout()
    fig.savefig(BENCH / "protocol.png", dpi=90)
    plt.close(fig)
    return "protocol.png"


def _plot_batching(batching: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for delay in batching["delays_us"]:
        rows = sorted((g for g in batching["grid"] if g["max_queue_delay_us"] == delay),
                      key=lambda g: g["max_batch_size"])
        sizes = [g["max_batch_size"] for g in rows]
        ax1.plot(sizes, [g["throughput"] for g in rows], marker="o", label=f"delay {delay} µs")
        ax2.plot(sizes, [g["p99_ms"] for g in rows], marker="o", label=f"delay {delay} µs")
    for ax, title in ((ax1, "throughput (images/s)"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batching["sizes"], [str(s) for s in batching["sizes"]])
        ax.set_xlabel("detector max_batch_size")
        ax.set_title(f"detect at c={batching['concurrency']}: {title}")
        ax.grid(alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    fig.savefig(BENCH / "batching.png", dpi=90)
    plt.close(fig)
    return "batching.png"


def _ck(row: dict[str, Any], kind: str) -> float | None:
    """Compile seconds for target ``kind`` (cpu/gpu), under either name compile_bench.py has used."""
    for key in (f"compile_target_{kind}_s", f"compile_{kind}_s"):
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    return None


def _plot_compile(comp: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    rows = comp.get("results") or []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    nodes = [r["nodes"] for r in rows]
    series = {"load + schema": [r.get("load_s") for r in rows], "validate": [r.get("validate_s") for r in rows],
              "compile (cpu)": [_ck(r, "cpu") for r in rows], "compile (gpu)": [_ck(r, "gpu") for r in rows]}
    for label, values in series.items():
        if all(isinstance(v, (int, float)) for v in values):
            ax.plot(nodes, values, marker="o", label=label)
    ax.plot(nodes, [n / 1000 for n in nodes], ls=":", color="grey", label="1 ms per node")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("seconds")
    ax.set_title("compile time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / "compile.png", dpi=90)
    plt.close(fig)
    return "compile.png"


# -- markdown ------------------------------------------------------------------------------------


def _summary(limit: dict[str, Any] | None, proto: dict[str, Any] | None, sbs: dict[str, Any] | None,
             comp: dict[str, Any] | None) -> list[str]:
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    if limit:
        lines.append(f"| 1. detect on dagserve / ideal (2 cores) | {_f(limit['ratio_to_ideal'], 2)} "
                     f"(median of per-repetition ratios; best {_f(limit['throughput'], 1)} images/s, ideal "
                     f"{_f(limit['costs']['ideal_throughput'], 1)}); "
                     f"CPU efficiency {_f(limit.get('cpu_efficiency'), 2)}; "
                     f"{_f(limit.get('ratio_to_parallel'), 2)} of 2 threads in-process | ≥ 0.85 | "
                     f"{_yes(limit['meets_target'])} |")
    else:
        lines.append("| 1. detect on dagserve / ideal | not measured (no detect pipeline yet) | ≥ 0.85 | — |")
    if proto:
        r = proto["ratio_dagserve_to_bare"]
        lines.append(f"| 2. identity, dagserve / bare grpc.aio | c=1: {_f(r.get('1'), 3)}, c=16: {_f(r.get('16'), 3)} "
                     f"| ≥ 0.8 | {_yes(proto['meets_target'])} |")
    for pipeline, label in (("detect", "3. detect, dagserve / Triton (c ≥ 4; p99 no worse)"),
                            ("add_mul", "3. add_mul, dagserve / Triton (every c)")):
        section = (sbs or {}).get(pipeline)
        if not section:
            lines.append(f"| {label} | not measured | {'≥ 1.5×' if pipeline == 'detect' else '≥ 1×'} | — |")
            continue
        judged = [r for r in section["ratios"] if r["concurrency"] >= section["judged_from"]]
        tputs = ", ".join(f"c={r['concurrency']}: {_f(r['throughput_ratio'], 2)}×" for r in judged)
        tputs += "; CPU per request " + ", ".join(f"{_f(r.get('cpu_efficiency_ratio'), 2)}×" for r in judged)
        p99 = ""
        if pipeline == "detect":
            p99 = "; p99 ratio " + ", ".join(_f(r["p99_ratio"], 2) for r in judged)
        lines.append(f"| {label}, vs {section['triton_best']} | {tputs}{p99} | "
                     f"{'≥ 1.5×' if pipeline == 'detect' else '≥ 1×'} | {_yes(section['meets_target'])} |")
    if comp and comp.get("results"):
        rows = {r["nodes"]: r for r in comp["results"]}
        parts = [f"{n:,} nodes {_f(_ck(rows[n], 'cpu'), 2)} s" for n in sorted(rows) if n in (1000, 10000)]
        ok = [rows[n].get("meets_target") for n in (1000, 10000) if n in rows]
        lines.append(f"| 5. compile time | {'; '.join(parts) or '—'} | 1,000 < 1 s, 10,000 < 10 s | "
                     f"{_yes(all(ok) if ok else None)} |")
    return lines


def _side_table(section: dict[str, Any], levels: list[int]) -> list[str]:
    who = list(section["results"])
    best = section["triton_best"]
    head = ("| c | " + " | ".join(f"{w} infer/s | {w} p50 / p99 ms | {w} CPU ms/req" for w in who)
            + f" | dagserve / {best} throughput | p99 ratio | CPU-efficiency ratio |")
    lines = [head, "|" + "---|" * (1 + 3 * len(who) + 3)]
    ratios = {r["concurrency"]: r for r in section["ratios"]}
    for c in levels:
        cells = []
        for w in who:
            cell = _cell(section["results"][w], c)
            cells += [_f(cell.get("throughput"), 0), f"{_f(cell.get('p50_ms'), 1)} / {_f(cell.get('p99_ms'), 1)}",
                      _f(cell.get("cpu_ms_per_req"), 2)]
        r = ratios.get(c, {})
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {_f(r.get('throughput_ratio'), 2)}× | "
                     f"{_f(r.get('p99_ratio'), 2)} | {_f(r.get('cpu_efficiency_ratio'), 2)}× |")
    lines += ["", "CPU ms/req: the server's own CPU (its whole process group, from /proc) per request; the "
                  "CPU-efficiency ratio is Triton's CPU per request over dagserve's, which other jobs on the "
                  "machine hardly move."]
    return lines


def _foreign(*sections: dict[str, Any] | None) -> float | None:
    values: list[float] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "foreign_cores" and isinstance(v, (int, float)):
                    values.append(float(v))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for s in sections:
        walk(s)
    return sum(values) / len(values) if values else None


def _safe(title: str, render: Callable[[], list[str]]) -> list[str]:
    """A section's lines, or a line saying why it could not be rendered (the others still are)."""
    try:
        return render()
    except Exception as exc:  # a JSON of an older or newer shape must not lose the whole report
        return [f"Could not render {title}: {type(exc).__name__}: {exc}"]


def _header(meta: dict[str, Any], foreign: float | None) -> list[str]:
    out = ["# dagserve benchmarks: results", ""]
    out.append(f"Generated by `benchmarks/run.sh{' --quick' if meta.get('quick') else ''}` at commit "
               f"`{meta.get('commit') or git_commit()}` on {meta.get('when', '?')}: {meta.get('cpus', '?')} CPU cores, "
               f"Python "
               f"{meta.get('python', '?')}, Triton 2.51 (python backend) and perf_analyzer 2.51 from "
               f"`../shared/tools/peers`. Mode: {'quick' if meta.get('quick') else 'full'} "
               f"({meta.get('reps', '?')} repetition(s) per figure, medians; every server restarted per "
               f"repetition, contestants in rotated order). Wall time of the run: "
               f"{meta.get('seconds', 0) / 60:.1f} min. How each figure is measured: [README.md](README.md).")
    if meta.get("boost_nice") is not None:
        out.append(f"Each server under test and perf_analyzer ran in a session of its own with group nice "
                   f"{meta['boost_nice']} (Linux autogroups), so other jobs on this shared machine take less "
                   "from the measurement; every contestant is treated alike.")
    if "quiet_waited_s" in meta:
        out.append(f"Before each window the runner waited for other jobs to use < 0.3 cores: "
                   f"{meta['quiet_waited_s']} s of waiting in all (budget {meta['quiet_budget_s']:.0f} s; once spent, "
                   "windows start whatever the load).")
    out.append("")
    if foreign is not None:
        out.append(f"**Machine load.** Other processes on this machine used on average **{foreign:.2f} of "
                   f"{meta.get('cpus', 2)} cores** during the measurements (from /proc: whole-machine CPU minus "
                   "the server under test, perf_analyzer and this runner). "
                   + ("That lowers every throughput below; the CPU-efficiency figures are not affected by it, "
                      "and the ratios between servers less than the absolute numbers."
                      if foreign > 0.1 else "The machine was quiet."))
        out.append("")
    out += [f"- note: {note}" for note in meta.get("notes", [])]
    if meta.get("notes"):
        out.append("")
    return out


def _limit_lines(limit: dict[str, Any] | None, image: str | None) -> list[str]:
    if not limit:
        return ["Not measured: `pipelines/detect.yaml` or its model is not in the repository yet."]
    costs = limit["costs"]
    spec = limit["spec"]
    spec = str(Path(spec).relative_to(REPO)) if spec.startswith(str(REPO)) else spec
    out = [f"Spec `{spec}`, {costs['images']} held-out JPEG scenes (mean {costs['jpeg_kb_mean']:.0f} KB, "
           f"{costs['detections_mean']:.1f} detections per image).", ""]
    out += ["| stage | CPU ms / image | wall ms / image | note |", "|---|---|---|---|"]
    for name, stage in costs["stages"].items():
        note = f"best batch size {stage['batch_size']}" if "batch_size" in stage else ""
        out.append(f"| {name} | {stage['cpu_s'] * 1000:.3f} | {stage['wall_s'] * 1000:.3f} | {note} |")
    out.append(f"| **sum** | **{costs['cpu_s_per_image'] * 1000:.3f}** | | ideal = {costs['cores']} / sum = "
               f"**{costs['ideal_throughput']:.1f} images/s** |")
    out.append("")
    per_batch = ", ".join(f"b={b}: {v['cpu_s'] * 1000:.2f} ms" for b, v in costs["model_per_batch"].items())
    out += [f"Detector CPU per image by batch size: {per_batch}.", ""]
    out += ["| dagserve, c | images/s | p50 ms | p99 ms | server cores | others' cores |",
            "|---|---|---|---|---|---|"]
    for c in limit["levels"]:
        cell = _cell(limit["dagserve"], c)
        out.append(f"| {c} | {_f(cell.get('throughput'), 1)} | {_f(cell.get('p50_ms'), 1)} | "
                   f"{_f(cell.get('p99_ms'), 1)} | {_f(cell.get('server_cores'), 2)} | "
                   f"{_f(cell.get('foreign_cores'), 2)} |")
    out.append("")
    par = limit.get("parallel")
    if par:
        out.append(f"In-process, no server, {par['threads']} threads each running the whole chain per image: "
                   f"**{par['throughput']:.1f} images/s** ({_f((par.get('cpu_s_per_image') or 0) * 1000, 2)} ms CPU "
                   f"per image: the stages slow each other down when they share the machine); dagserve reaches "
                   f"**{_f(limit.get('ratio_to_parallel'), 2)}** of that.")
        out.append("")
    rt = limit.get("runtime")
    if rt:
        out.append(f"The same compiled pipeline run in-process by the runtime (`Pipeline.infer_async`, "
                   f"{rt['concurrency']} concurrent callers, no server): **{rt['throughput']:.1f} images/s** "
                   f"({_f((rt.get('cpu_s_per_image') or 0) * 1000, 2)} ms CPU per image).")
        out.append("")
    steps = limit.get("steps")
    if steps:
        out.append(f"Where the ideal goes (medians of per-repetition ratios): 2 threads in-process / ideal "
                   f"**{_f(steps.get('parallel_to_ideal'), 2)}** (the stages contend for the 2 cores' caches and "
                   f"memory) × runtime in-process / 2 threads **{_f(steps.get('runtime_to_parallel'), 2)}** (queues, "
                   f"batching, thread hand-offs) × served / runtime in-process "
                   f"**{_f(steps.get('ratio_to_runtime'), 2)}** (gRPC, protobuf, perf_analyzer on the same cores).")
        out.append("")
    per_rep = limit.get("per_rep") or []
    if per_rep:
        reps = "; ".join(f"{_f(r.get('throughput'), 1)} of {_f(r.get('ideal'), 1)} = {_f(r.get('ratio_to_ideal'), 2)}"
                         for r in per_rep)
        out.append(f"Per repetition (ideal measured just before that repetition's server ran): {reps}.")
        out.append("")
    out.append(f"**dagserve / ideal = {_f(limit['ratio_to_ideal'], 2)}** (median of the repetitions; best level "
               f"c={limit['best_concurrency']}) (target ≥ 0.85). Server CPU per image "
               f"{_f((limit.get('server_cpu_s_per_image') or 0) * 1000, 2)} ms vs "
               f"{costs['cpu_s_per_image'] * 1000:.2f} ms of work: **CPU efficiency "
               f"{_f(limit.get('cpu_efficiency'), 2)}**.")
    stats = [s for s in limit.get("batch_stats", []) if s.get("mean_batch")]
    if stats:
        out.append(f"Mean detector batch at saturation: {stats[-1]['mean_batch']:.2f} "
                   f"(sizes: {stats[-1]['batches']}).")
    if image:
        out += ["", f"![limit]({image})"]
    return out


def _protocol_lines(proto: dict[str, Any] | None, image: str | None) -> list[str]:
    if not proto:
        return ["Not measured."]
    out = ["| server | c=1 infer/s | c=1 p99 ms | c=16 infer/s | c=16 p99 ms | server cores c=16 |",
           "|---|---|---|---|---|---|"]
    for who, table in proto["results"].items():
        c1, c16 = _cell(table, 1), _cell(table, 16)
        out.append(f"| {who} | {_f(c1.get('throughput'))} | {_f(c1.get('p99_ms'), 2)} | "
                   f"{_f(c16.get('throughput'))} | {_f(c16.get('p99_ms'), 2)} | {_f(c16.get('server_cores'), 2)} |")
    r = proto["ratio_dagserve_to_bare"]
    out += ["", f"dagserve / bare: c=1 **{_f(r.get('1'), 3)}**, c=16 **{_f(r.get('16'), 3)}** (target ≥ 0.8)."]
    if image:
        out += ["", f"![protocol]({image})"]
    return out


def _sbs_lines(sbs: dict[str, Any] | None, pipeline: str, image: str | None) -> list[str]:
    section = (sbs or {}).get(pipeline)
    if not section or not sbs:
        return ["Not measured."]
    out = [*_side_table(section, sbs["levels"]), ""]
    out.append(f"Ratios against Triton's better instance count ({section['triton_best']}); target "
               f"{section['target']}× from c={section['judged_from']}: met: {_yes(section['meets_target'])}.")
    if image:
        out += ["", f"![{pipeline}]({image})"]
    return out


def _batching_lines(batching: dict[str, Any] | None, image: str | None) -> list[str]:
    if not batching:
        return ["Not measured."]
    out = ["| max_batch_size | delay µs | images/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for g in sorted(batching["grid"], key=lambda g: (g["max_queue_delay_us"], g["max_batch_size"])):
        out.append(f"| {g['max_batch_size']} | {g['max_queue_delay_us']} | {_f(g['throughput'], 1)} | "
                   f"{_f(g['p50_ms'], 1)} | {_f(g['p99_ms'], 1)} |")
    out.append(f"\nAt concurrency {batching['concurrency']}.")
    if image:
        out += ["", f"![batching]({image})"]
    return out


def _compile_lines(comp: dict[str, Any] | None, image: str | None) -> list[str]:
    if not comp or not comp.get("results"):
        return ["Not measured (compile_bench.py missing or failed)."]
    out = ["| nodes | load s | validate s | compile cpu s | compile gpu s | target s | met |",
           "|---|---|---|---|---|---|---|"]
    for r in comp["results"]:
        out.append(f"| {r['nodes']:,} | {_f(r.get('load_s'), 3)} | {_f(r.get('validate_s'), 3)} | "
                   f"{_f(_ck(r, 'cpu'), 3)} | {_f(_ck(r, 'gpu'), 3)} | "
                   f"{_f(r.get('target_s'), 1)} | {_yes(r.get('meets_target'))} |")
    if image:
        out += ["", f"![compile]({image})"]
    return out


def write(meta: dict[str, Any]) -> Path:
    """Render every plot and ``RESULTS.md`` from ``benchmarks/out/*.json``."""
    plots = ensure_matplotlib()
    limit, proto, sbs = _load("limit"), _load("protocol"), _load("side_by_side")
    batching, comp = _load("batching"), _load("compile")
    ops, runtime = _load("ops"), _load("runtime")
    images: dict[str, str | None] = {}
    if plots:
        makers: dict[str, Callable[[], str | None]] = {
            "limit": lambda: _plot_limit(limit, sbs) if limit else None,
            "protocol": lambda: _plot_protocol(proto) if proto else None,
            "add_mul": lambda: _plot_side_by_side(sbs, "add_mul") if sbs else None,
            "detect": lambda: _plot_side_by_side(sbs, "detect") if sbs else None,
            "batching": lambda: _plot_batching(batching) if batching else None,
            "compile": lambda: _plot_compile(comp) if comp else None,
        }
        for key, make in makers.items():
            try:
                images[key] = make()
            except Exception as exc:  # a plot is not worth the report
                print(f"benchmarks: plot {key} failed: {exc}", file=sys.stderr)
                images[key] = None

    out = _header(meta, _foreign(limit, proto, sbs, batching))
    out += ["## Summary", "", *_safe("the summary", lambda: _summary(limit, proto, sbs, comp)), ""]
    out += ["## 1. The limit: detect against the 2-core ideal", ""]
    out += [*_safe("the limit", lambda: _limit_lines(limit, images.get("limit"))), ""]
    out += ["## 2. Protocol floor: identity vs a bare grpc.aio server", ""]
    out += [*_safe("the protocol floor", lambda: _protocol_lines(proto, images.get("protocol"))), ""]
    out += ["## 3. Triton side by side", ""]
    for pipeline in ("add_mul", "detect"):
        out += [f"### {pipeline}", ""]
        out += [*_safe(pipeline, functools.partial(_sbs_lines, sbs, pipeline, images.get(pipeline))), ""]
    out += ["## 4. Batching: detect over the detector's max_batch_size × max_queue_delay_us", ""]
    out += [*_safe("batching", lambda: _batching_lines(batching, images.get("batching"))), ""]
    out += ["## 5. Compile time (benchmarks/compile_bench.py)", ""]
    out += [*_safe("compile time", lambda: _compile_lines(comp, images.get("compile"))), ""]
    for title, data, name in (("Ops (benchmarks/ops_bench.py)", ops, "ops"),
                              ("Runtime (benchmarks/runtime_bench.py)", runtime, "runtime")):
        out += [f"## {title}", "", *_safe(name, functools.partial(_generic, data, name)), ""]
    RESULTS.write_text("\n".join(out).rstrip() + "\n")
    return RESULTS


def _generic(data: dict[str, Any] | None, name: str) -> list[str]:
    """A table of another benchmark's ``results`` rows (whatever their keys), or its top-level numbers."""
    if not data:
        return [f"Not measured (benchmarks/{name}_bench.py missing or failed)."]
    rows = data.get("results", data.get("rows"))
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))][:9]
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            lines.append("| " + " | ".join(_short(r.get(k)) for k in keys) + " |")
        return [*lines, "", f"Full data: `benchmarks/out/{name}.json`."]
    flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and k not in ("benchmark",)}
    return [f"- {k}: {_short(v)}" for k, v in flat.items()] + ["", f"Full data: `benchmarks/out/{name}.json`."]


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
