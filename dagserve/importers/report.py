"""What an import carried over, and what it could not: one line per field and model.

Both importers (Triton, TorchServe) fill an :class:`ImportReport`; the CLI prints it
and turns it into the exit code of ``dagserve import``: 0 everything converted, 1
converted with warnings (a field was dropped or approximated, each said with what to
do instead), 2 failed (a model or the whole repository could not be converted).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum

__all__ = ["EXIT_CONVERTED", "EXIT_FAILED", "EXIT_WARNINGS", "ImportReport", "Level", "Note"]

EXIT_CONVERTED, EXIT_WARNINGS, EXIT_FAILED = 0, 1, 2


class Level(str, Enum):
    """How much a note matters: ``info`` (mapped, said for the record), ``warning`` (dropped or
    approximated: behaviour differs), ``error`` (this model was not converted)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Note:
    """One field of one model.

    Attributes:
        model: the model (or workflow) the field belongs to.
        field: the field's path in the source format, e.g. ``sequence_batching`` or
            ``instance_group[0].kind``.
        message: what happened to it.
        instead: what to do instead in dagserve (empty for info notes).
        source: ``file:line`` where the field is, when known.
    """

    level: Level
    model: str
    field: str
    message: str
    instead: str = ""
    source: str = ""

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        text = f"{where}{self.level.value}: {self.model}: {self.field}: {self.message}"
        return f"{text}; instead: {self.instead}" if self.instead else text


@dataclass
class ImportReport:
    """Every note of one import, and the spec files it wrote."""

    notes: list[Note] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def add(self, level: Level, model: str, field_path: str, message: str, instead: str = "",
            source: str = "") -> None:
        self.notes.append(Note(level, model, field_path, message, instead, source))

    def info(self, model: str, field_path: str, message: str, source: str = "") -> None:
        self.add(Level.INFO, model, field_path, message, source=source)

    def warning(self, model: str, field_path: str, message: str, instead: str, source: str = "") -> None:
        self.add(Level.WARNING, model, field_path, message, instead, source)

    def error(self, model: str, field_path: str, message: str, instead: str = "", source: str = "") -> None:
        self.add(Level.ERROR, model, field_path, message, instead, source)

    @property
    def exit_code(self) -> int:
        levels = {n.level for n in self.notes}
        if Level.ERROR in levels or not self.written:
            return EXIT_FAILED
        return EXIT_WARNINGS if Level.WARNING in levels else EXIT_CONVERTED

    def render_text(self, verbose: bool = False) -> str:
        """One line per note (info notes only when ``verbose``), then a summary line."""
        lines = [n.render() for n in self.notes if verbose or n.level is not Level.INFO]
        counts = {level: sum(n.level is level for n in self.notes) for level in Level}
        lines.append(f"{len(self.written)} spec(s) written, {counts[Level.WARNING]} warning(s), "
                     f"{counts[Level.ERROR]} error(s)")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"written": self.written,
                           "notes": [{**asdict(n), "level": n.level.value} for n in self.notes],
                           "exit_code": self.exit_code}, indent=2)
