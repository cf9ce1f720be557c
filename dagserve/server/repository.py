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
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import compile_file
from dagserve.diagnostics import render_text
from dagserve.errors import InvalidInputError, NotFoundError, UnavailableError
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
    override_dir: str | None = None
    """The temporary directory of a load with ``file:`` overrides, kept while its pipeline serves."""


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

    async def _load_spec(self, spec: str, root: str, expected_name: str | None = None,
                         source: str | None = None) -> str:
        """Compile and start ``source`` (default: ``spec``) as the pipeline of ``spec``'s entry."""
        pipeline, name, error = await asyncio.get_running_loop().run_in_executor(
            None, self._compile, source or spec, root)
        if expected_name is not None:
            if pipeline is not None and name != expected_name:
                return f"{spec}: the spec now names pipeline '{name}', not '{expected_name}'"
            name = expected_name  # a spec that failed to compile has no name of its own
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

    async def load(self, name: str, spec_text: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """(Re)load ``name`` from its spec; a new spec file is looked for when unknown.

        With ``spec_text`` (Triton's ``config`` override) that document is compiled
        instead of the spec on disk, once: a later plain load reads the disk again.
        ``files`` (Triton's ``file:`` overrides, relative path -> content) are written
        beside it in a temporary directory of their own, which then is the pipeline's
        repository root; without files the document sits beside the spec on disk,
        so its relative paths mean what they mean there.

        Raises:
            NotFoundError: no spec names ``name`` (and no override was given).
            UnavailableError: the spec on disk failed to compile or start.
            InvalidInputError: the override failed to compile or start.
        """
        async with self._lock:
            if spec_text is not None:
                await self._load_override(name, spec_text, files or {})
                return
            entry = self.entries.get(name)
            if entry is None:
                for spec, root in self.discover():
                    _, found, _ = await asyncio.get_running_loop().run_in_executor(None, self._compile, spec, root)
                    if found == name:
                        entry = self.entries[name] = Entry(name, spec, root)
                        break
                else:
                    raise NotFoundError(f"failed to load '{name}': no spec in the repository names it")
            old_dir = entry.override_dir
            error = await self._load_spec(entry.spec, entry.root, expected_name=name)
            if error:
                raise UnavailableError(f"failed to load '{name}': {error}")
            if old_dir is not None and not entry.spec.startswith(old_dir):
                entry.override_dir = None
                shutil.rmtree(old_dir, ignore_errors=True)

    async def _load_override(self, name: str, spec_text: str, files: dict[str, bytes]) -> None:
        entry = self.entries.get(name)
        old_dir = entry.override_dir if entry is not None else None
        # A pipeline that came over the wire (no spec on disk) lives in its override directory:
        # the new override replaces it there, and becomes the spec a plain reload reads.
        from_wire = entry is None or (old_dir is not None and entry.spec.startswith(old_dir))
        new_dir = tempfile.mkdtemp(prefix=f"dagserve-load-{name}-") if files or from_wire else None
        if new_dir is not None:
            directory, root = new_dir, new_dir
        else:
            assert entry is not None
            directory, root = os.path.dirname(os.path.abspath(entry.spec)), entry.root
        try:
            for rel, content in files.items():
                target = os.path.join(directory, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as fh:
                    fh.write(content)
            if from_wire:
                source = os.path.join(directory, f"{name}.json")
                with open(source, "w", encoding="utf-8") as fh:
                    fh.write(spec_text)
            else:
                fd, source = tempfile.mkstemp(prefix=f".{name}.load-", suffix=".json", dir=directory)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(spec_text)
        except OSError as exc:
            if new_dir:
                shutil.rmtree(new_dir, ignore_errors=True)
            raise UnavailableError(f"failed to load '{name}': cannot write the override: {exc}") from None
        try:
            error = await self._load_spec(entry.spec if entry is not None else source, root,
                                          expected_name=name, source=source)
        finally:
            if not from_wire:
                os.unlink(source)
        if error:
            if new_dir:
                shutil.rmtree(new_dir, ignore_errors=True)
            if entry is None:
                self.entries.pop(name, None)
            raise InvalidInputError(f"failed to load '{name}' from the 'config' parameter: {error}")
        loaded = self.entries[name]
        loaded.override_dir = new_dir
        if from_wire:
            loaded.spec, loaded.root = source, root
        if old_dir is not None and old_dir != new_dir:
            shutil.rmtree(old_dir, ignore_errors=True)

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
            if entry.override_dir is not None and not entry.spec.startswith(entry.override_dir):
                shutil.rmtree(entry.override_dir, ignore_errors=True)
                entry.override_dir = None

    async def close(self, timeout: float | None = None) -> None:
        """Drain and close every pipeline (in parallel)."""
        pipelines = [e.pipeline for e in self.entries.values() if e.pipeline is not None]
        for entry in self.entries.values():
            entry.state = "UNAVAILABLE"
        await asyncio.gather(*(p.close(drain=True, timeout=timeout) for p in pipelines))
        for entry in self.entries.values():
            if entry.override_dir is not None:
                shutil.rmtree(entry.override_dir, ignore_errors=True)
                entry.override_dir = None

    @property
    def ready(self) -> bool:
        return bool(self.entries) and all(
            e.state == "READY" for e in self.entries.values() if e.reason != "unloaded")
