"""The pipeline repository the server serves: specs found on disk, compiled, loaded, swapped.

A pipeline becomes READY only after its kernels are created and warmed up. A
reload compiles the changed spec, starts the new pipeline beside the old one,
switches new requests to it, and only then drains the old one, so no request in
flight is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import compile_file
from dagserve.diagnostics import render_text
from dagserve.errors import NotFoundError, UnavailableError
from dagserve.runtime.pipeline import Pipeline

__all__ = ["Entry", "Repository"]

log = logging.getLogger("dagserve.server")


@dataclass
class Entry:
    """One pipeline of the repository and its state (READY, LOADING, UNAVAILABLE)."""

    name: str
    spec: str
    root: str
    pipeline: Pipeline | None = None
    state: str = "UNAVAILABLE"
    reason: str = ""
    retiring: list[Pipeline] = field(default_factory=list)


class Repository:
    """Specs from files and directories, by pipeline name.

    Args:
        paths: spec files, or directories whose ``*.yaml``/``*.yml`` files are specs
            (a directory is also the pipeline repository root of its specs).
        target: ``cpu`` or ``gpu`` for ``device: auto`` nodes.
        drain_timeout: seconds an old pipeline may take to finish after a reload.
    """

    def __init__(self, paths: list[str], target: str = "cpu", drain_timeout: float = 30.0) -> None:
        self.paths = paths
        self.target = target
        self.drain_timeout = drain_timeout
        self.entries: dict[str, Entry] = {}
        self._lock = asyncio.Lock()

    def discover(self) -> list[tuple[str, str]]:
        """(spec file, root) for every spec under ``paths``."""
        found = []
        for p in self.paths:
            if os.path.isdir(p):
                for f in sorted(Path(p).iterdir()):
                    if f.suffix in (".yaml", ".yml") and f.is_file():
                        found.append((str(f), p))
            else:
                found.append((p, os.path.dirname(os.path.abspath(p))))
        return found

    def _compile(self, spec: str, root: str) -> tuple[Pipeline | None, str, str]:
        """(pipeline, name, error text) for one spec (name from the spec, or the file stem)."""
        result = compile_file(spec, CompileOptions(target=self.target), root=root)
        name = result.plan.name if result.plan else Path(spec).stem
        if result.plan is None:
            return None, name, render_text(result.diagnostics)
        for d in result.diagnostics:
            log.warning("%s", d.one_line())
        return Pipeline(result.plan), name, ""

    async def load_all(self) -> list[str]:
        """Compile and start every spec; return the error texts of those that failed."""
        errors = []
        for spec, root in self.discover():
            error = await self._load_spec(spec, root)
            if error:
                errors.append(error)
        return errors

    async def _load_spec(self, spec: str, root: str, expected_name: str | None = None) -> str:
        pipeline, name, error = await asyncio.get_running_loop().run_in_executor(None, self._compile, spec, root)
        if expected_name is not None and name != expected_name:
            return f"{spec}: the spec now names pipeline '{name}', not '{expected_name}'"
        entry = self.entries.get(name)
        if entry is not None and entry.spec != spec:
            return f"{spec}: pipeline name '{name}' is already used by {entry.spec}"
        if entry is None:
            entry = self.entries[name] = Entry(name, spec, root)
        if pipeline is None:
            entry.reason = f"compile failed:\n{error}"
            if entry.pipeline is None:
                entry.state = "UNAVAILABLE"
            return error  # the diagnostics already start with the spec's path
        entry.state = "LOADING" if entry.pipeline is None else entry.state
        try:
            await pipeline.start()
        except Exception as exc:
            entry.reason = f"load failed: {exc}"
            if entry.pipeline is None:
                entry.state = "UNAVAILABLE"
            await pipeline.close(drain=False)
            return f"{spec}: {exc}"
        old, entry.pipeline = entry.pipeline, pipeline
        entry.state, entry.reason = "READY", ""
        if old is not None:
            await self._retire(entry, old)
        log.info("pipeline '%s' ready (%s, plan %s)", name, spec, pipeline.plan.hash[:12])
        return ""

    async def _retire(self, entry: Entry, old: Pipeline) -> None:
        entry.retiring.append(old)
        try:
            await old.close(drain=True, timeout=self.drain_timeout)
        finally:
            entry.retiring.remove(old)

    def get(self, name: str) -> Pipeline:
        """The READY pipeline called ``name``.

        Raises:
            NotFoundError: no such pipeline (Triton's wording).
            UnavailableError: it exists but is not ready.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        if entry.state != "READY" or entry.pipeline is None or not entry.pipeline.ready:
            why = f": {entry.reason.splitlines()[0]}" if entry.reason else ""
            raise UnavailableError(f"Request for unavailable model: '{name}' is not ready{why}")
        return entry.pipeline

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from its spec; a new spec file is looked for when unknown."""
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                for spec, root in self.discover():
                    _, found, _ = await asyncio.get_running_loop().run_in_executor(None, self._compile, spec, root)
                    if found == name:
                        entry = self.entries[name] = Entry(name, spec, root)
                        break
                else:
                    raise NotFoundError(f"failed to load '{name}': no spec in the repository names it")
            error = await self._load_spec(entry.spec, entry.root, expected_name=name)
            if error:
                raise UnavailableError(f"failed to load '{name}': {error}")

    async def unload(self, name: str) -> None:
        """Stop routing to ``name``, then drain and close it."""
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                raise NotFoundError(f"failed to unload '{name}': unknown model")
            old, entry.pipeline = entry.pipeline, None
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
            if old is not None:
                await self._retire(entry, old)

    async def close(self, timeout: float | None = None) -> None:
        """Drain and close every pipeline (in parallel)."""
        pipelines = [e.pipeline for e in self.entries.values() if e.pipeline is not None]
        for entry in self.entries.values():
            entry.state = "UNAVAILABLE"
        await asyncio.gather(*(p.close(drain=True, timeout=timeout) for p in pipelines))

    @property
    def ready(self) -> bool:
        return bool(self.entries) and all(
            e.state == "READY" for e in self.entries.values() if e.reason != "unloaded")
