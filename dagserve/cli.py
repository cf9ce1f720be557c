"""The ``dagserve`` command line.

Exit codes: 0 clean (warnings allowed unless ``--strict``), 1 the spec has errors,
2 the command line itself is wrong (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dagserve import __version__
from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import CompileResult, compile_file
from dagserve.diagnostics import Diagnostic, render_json, render_text

if TYPE_CHECKING:
    from dagserve.ops.base import OpDef

__all__ = ["main"]

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def detect_target() -> str:
    """``gpu`` when a CUDA device is usable from CuPy, else ``cpu`` (no import errors leak)."""
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return "cpu"
    try:
        import cupy

        return "gpu" if cupy.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def _spec_files(paths: Sequence[str]) -> list[str]:
    """Expand directories into the ``*.yaml``/``*.yml`` specs they hold (sorted)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
            files.extend(found)
        else:
            files.append(p)
    return files


def _options(args: argparse.Namespace) -> CompileOptions:
    target = args.target if args.target != "auto" else detect_target()
    return CompileOptions(target=target, debug=os.environ.get("DAGSERVE_DEBUG") == "1")


def _root_for(args: argparse.Namespace, spec: str) -> str | None:
    if args.root:
        return str(args.root)
    if getattr(args, "_dir_roots", None) and spec in args._dir_roots:
        return str(args._dir_roots[spec])
    return None


def _report(results: list[CompileResult], fmt: str, strict: bool, json_to: TextIO | None = None) -> int:
    diagnostics: list[Diagnostic] = [d for r in results for d in r.diagnostics]
    if fmt == "json":
        print(render_json(diagnostics), file=json_to or sys.stdout)
    elif diagnostics:
        print(render_text(diagnostics), file=sys.stderr)
    failed = any(d.severity == "error" for d in diagnostics) or (strict and diagnostics)
    return EXIT_ERRORS if failed else EXIT_OK


def _compile_many(args: argparse.Namespace) -> list[tuple[str, CompileResult]]:
    options = _options(args)
    out = []
    dir_roots = {}
    for p in args.specs:
        if os.path.isdir(p):
            for f in _spec_files([p]):
                dir_roots[f] = p
    args._dir_roots = dir_roots
    for spec in _spec_files(args.specs):
        out.append((spec, compile_file(spec, options, root=_root_for(args, spec))))
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    results = _compile_many(args)
    if not results:
        print("dagserve: no specs found", file=sys.stderr)
        return EXIT_USAGE
    code = _report([r for _, r in results], args.format, args.strict)
    if args.format == "text":
        for spec, r in results:
            if r.ok and r.plan is not None:
                print(f"{spec}: ok ({len(r.plan.nodes)} nodes, plan {r.plan.hash[:12]})")
    return code


def cmd_compile(args: argparse.Namespace) -> int:
    options = _options(args)
    result = compile_file(args.spec, options, root=args.root)
    # with '-o -' stdout carries the plan alone, so it can be piped into a JSON tool
    side = sys.stderr if args.output == "-" else sys.stdout
    code = _report([result], args.format, args.strict, json_to=side)
    if result.plan is None or code != EXIT_OK:
        return code
    if args.explain:
        from dagserve.render import explain

        print(explain(result.plan), file=side)
    if args.output == "-":
        sys.stdout.write(result.plan.to_json())
    elif args.output:
        Path(args.output).write_text(result.plan.to_json(), encoding="utf-8")
        if args.format == "text":
            print(f"wrote {args.output} (plan {result.plan.hash[:12]})", file=sys.stderr)
    elif args.format == "text" and not args.explain:
        # Nothing asked for but the check itself: say that it passed and how to get the plan.
        print(f"{args.spec}: ok ({len(result.plan.nodes)} nodes, plan {result.plan.hash[:12]}, target "
              f"{result.plan.target}); write it with -o FILE (or -o - for stdout), read it with --explain",
              file=sys.stderr)
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from dagserve.render import write_graph

    options = _options(args)
    result = compile_file(args.spec, options, root=args.root)
    code = _report([result], "text", False)
    if result.plan is None:
        return code
    try:
        write_graph(result.plan, args.output)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"dagserve graph: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_ERRORS
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _ports_text(op: OpDef) -> str:
    """``x, mask? -> y`` for ``dagserve ops``; ports a node names at load or compile time are said to be so."""
    if op.dynamic_ports and not op.inputs:
        return "(ports from the class)" if op.kind != "model" else "(ports from the model)"
    inputs = ", ".join(p.name + ("?" if p.optional else "") for p in op.inputs)
    outputs = ", ".join(p.name for p in op.outputs) if op.outputs else "(outputs named by its params)"
    return f"{inputs} -> {outputs}"


def cmd_ops(args: argparse.Namespace) -> int:
    from dagserve.ops.registry import default_registry

    registry = default_registry()
    if args.format == "json":
        doc = [
            {
                "name": op.name,
                "summary": op.summary,
                "devices": sorted(op.devices),
                "inputs": [p.name for p in op.inputs],
                "outputs": [p.name for p in op.outputs],
                "dynamic_ports": op.dynamic_ports,
                "params": dict(op.params_schema),
            }
            for op in registry
        ]
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    for op in registry:
        print(f"{op.name:18} [{'/'.join(sorted(op.devices))}] {_ports_text(op)}\n{'':18} {op.summary}")
    return EXIT_OK


def _port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound now (another process listens there), as the servers bind it."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unresolvable host: the server's own error says so
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC and aiohttp do
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:  # not e.g. EADDRNOTAVAIL: ::1 on a host without IPv6
                    return True
    return False


def _busy_port_error(args: argparse.Namespace) -> str | None:
    """One line naming the flag to change when a listener's port is taken, before any server starts.

    Checked up front because gRPC's C core logs its own bind failure before Python
    sees it, and aiohttp's surfaces as a traceback.
    """
    flags = {"--grpc-port": args.grpc_port, "--http-port": args.http_port, "--metrics-port": args.metrics_port}
    seen: dict[int, str] = {}
    for flag, port in flags.items():
        if port <= 0:
            continue
        if port in seen:
            return f"dagserve serve: {flag} {port} is also {seen[port]}; give each listener its own port"
        seen[port] = flag
        if _port_in_use(args.host, port):
            return (f"dagserve serve: port {port} on {args.host} is already in use; change {flag} "
                    f"(0 picks a free port, -1 turns that listener off)")
    return None


def cmd_schema(args: argparse.Namespace) -> int:
    """Print or write the editor JSON Schema; ``--check``: exit 1 if a file differs from it."""
    from dagserve.compiler.editor_schema import editor_schema_text

    text = editor_schema_text()
    if not args.output:
        sys.stdout.write(text)
        return EXIT_OK
    stale = []
    for path in args.output:
        try:
            current = Path(path).read_text(encoding="utf-8")
        except OSError:
            current = None
        if args.check:
            if current != text:
                stale.append(path)
        elif current != text:
            Path(path).write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    if stale:
        print(f"dagserve schema: out of date: {', '.join(stale)} (run 'dagserve schema "
              f"{' '.join('-o ' + p for p in args.output)}')", file=sys.stderr)
        return EXIT_ERRORS
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    busy = _busy_port_error(args)
    if busy:
        print(busy, file=sys.stderr)
        return EXIT_ERRORS

    from dagserve.server.app import ServerConfig, serve

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        paths=args.paths,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        target=args.target if args.target != "auto" else detect_target(),
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        drain_timeout=args.drain_timeout,
        exit_on_error=not args.no_exit_on_error,
        model_control_mode=args.model_control_mode,
        access_log=args.access_log,
        http_read_timeout=args.http_read_timeout,
        http_idle_timeout=args.http_idle_timeout,
        http_max_connections=args.http_max_connections,
        grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
        grpc_max_streams=args.grpc_max_streams,
        grpc_idle_timeout=args.grpc_idle_timeout,
        grpc_max_connection_age=args.grpc_max_connection_age,
    )
    return asyncio.run(serve(config, ready_file=args.ready_file))


def cmd_run(args: argparse.Namespace) -> int:
    """Run a pipeline on inputs given on the command line and print its outputs."""
    from dagserve.runtime._run_command import run_command  # the runtime loads only for 'run'

    target = args.target if args.target != "auto" else detect_target()
    return run_command(args.spec, args.input, repeat=args.repeat, fmt=args.format, target=target,
                       root=args.root)


def _add_compile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where 'device: auto' nodes run (default: gpu if one is usable, else cpu)")
    p.add_argument("--root", help="the pipeline repository; spec paths may not leave it "
                   "(default: the spec's directory, or the directory given)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagserve", description="Declarative ML inference pipelines.")
    parser.add_argument("--version", action="version", version=f"dagserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check specs and report every problem")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or directories of specs")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    _add_compile_flags(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("compile", help="compile a spec into a plan")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", help="write the plan (JSON) here; '-' for stdout")
    p.add_argument("--explain", action="store_true", help="print stages, devices, types, batching, copies")
    p.add_argument("--format", choices=["text", "json"], default="text", help="diagnostics format")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    _add_compile_flags(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("graph", help="draw the compiled pipeline (.dot, .mmd, .svg, .png)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, help="output file; the extension picks the format")
    _add_compile_flags(p)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("serve", help="serve pipelines over gRPC (KServe v2 / Triton), HTTP/REST and metrics")
    p.add_argument("paths", nargs="+", metavar="REPO_OR_SPEC", help="a directory of specs, or spec files")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0: any free port, -1: off)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (0: any free port, -1: off)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus port (0: any, -1: off)")
    p.add_argument("--target", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="largest request or response (MiB)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to finish requests in flight")
    p.add_argument("--no-exit-on-error", action="store_true",
                   help="serve the pipelines that load even if some fail (default: exit)")
    p.add_argument("--ready-file", help="write 'grpc=PORT http=PORT metrics=PORT' here once ready")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--model-control-mode", choices=["none", "explicit"], default="none",
                   help="explicit: clients may load, reload and unload pipelines; none: refused (default)")
    p.add_argument("--access-log", action="store_true", help="log every request, not only the failed ones")
    p.add_argument("--http-read-timeout", type=float, default=60.0, metavar="S",
                   help="seconds an HTTP request body may take to arrive, then 408 (default 60; 0: no limit)")
    p.add_argument("--http-idle-timeout", type=float, default=75.0, metavar="S",
                   help="close an HTTP connection idle this long (default 75)")
    p.add_argument("--http-max-connections", type=int, default=1000, metavar="N",
                   help="HTTP connections open at once, more are answered 503 (default 1000; 0: no cap)")
    p.add_argument("--grpc-max-concurrent-rpcs", type=int, default=1000, metavar="N",
                   help="gRPC calls served at once, more get RESOURCE_EXHAUSTED (default 1000; 0: no limit)")
    p.add_argument("--grpc-max-streams", type=int, default=100, metavar="N",
                   help="calls in flight per gRPC connection (default 100)")
    p.add_argument("--grpc-idle-timeout", type=float, default=300.0, metavar="S",
                   help="close a gRPC connection with no call in flight this long (default 300)")
    p.add_argument("--grpc-max-connection-age", type=float, default=0.0, metavar="S",
                   help="close every gRPC connection after this long, giving its calls up to 30 s more "
                   "(bounds a call whose message never arrives; default 0: off)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("run", help="run a pipeline on inputs and print its outputs")
    p.add_argument("spec", metavar="SPEC", help="a spec (.yaml) or a compiled plan (.json)")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=@FILE|VALUE",
                   help="an input: @file.npy, @file.json, @file (raw bytes, for bytes inputs), or a JSON "
                   "value such as 3 or [[1,2],[3,4]] (cast to the input's dtype); repeat for each input")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run N times and print latency percentiles (default 1)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _add_compile_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schema", help="print or write the JSON Schema for editors (spec format and op params)")
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE",
                   help="write it here (repeatable); without it, print it")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a FILE is not up to date")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("ops", help="list the available ops")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_ops)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
