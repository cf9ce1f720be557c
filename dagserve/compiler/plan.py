"""The Plan: the compiled pipeline as plain, deterministic, hashable data.

The runtime is built from a Plan, never from YAML. ``Plan.to_json()`` is canonical
(sorted keys, fixed separators), so the same spec and files give byte-identical
plans; ``Plan.hash`` is the SHA-256 of that text without the machine-specific
``root``, so it names the pipeline's content wherever it is checked out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dagserve.types import TensorType

__all__ = ["PLAN_FORMAT", "Plan", "PlanNode", "PlanTensor"]

PLAN_FORMAT = 1


@dataclass(frozen=True)
class PlanTensor:
    """A pipeline input or output: its name, type and (for outputs) the port it reads."""

    name: str
    type: TensorType
    source: str | None = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.to_json()}
        if self.source is not None:
            out["from"] = self.source
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanTensor:
        return cls(data["name"], TensorType.from_json(data["type"]), data.get("from"),
                   data.get("description", ""))


@dataclass(frozen=True)
class PlanNode:
    """One step the runtime executes: an op, a model, or a copy.

    Attributes:
        inputs: port -> references (``NODE.PORT`` or ``inputs.NAME``).
        outputs: port -> type (on this node's device).
        files: param -> path relative to the plan's root.
        stage: longest distance from the pipeline inputs (for ``--explain``).
        source: ``file:line:col`` of the node in the spec (copies: of their consumer).
    """

    name: str
    kind: str
    op: str | None
    params: dict[str, Any]
    inputs: dict[str, list[str]]
    outputs: dict[str, TensorType]
    device: str
    instances: int
    batching: dict[str, Any]
    stage: int
    files: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    warmup: bool | dict[str, Any] = True
    """The spec's ``warmup``: ``True`` (the backend's own), ``False``, or ``{"inputs": {port: item}}``."""

    def to_json(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: asdict deep-copies every param (slow at 10,000 nodes)
        extra = {} if self.warmup is True else {"warmup": self.warmup}  # default left out: plans stay as they were
        return {
            "name": self.name,
            "kind": self.kind,
            "op": self.op,
            "params": self.params,
            "inputs": self.inputs,
            "outputs": {p: t.to_json() for p, t in self.outputs.items()},
            "device": self.device,
            "instances": self.instances,
            "batching": self.batching,
            "stage": self.stage,
            "files": self.files,
            "source": self.source,
            **extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanNode:
        data = dict(data)
        data["outputs"] = {p: TensorType.from_json(t) for p, t in data["outputs"].items()}
        return cls(**data)


@dataclass(frozen=True)
class Plan:
    """A compiled pipeline.

    Attributes:
        root: absolute path of the pipeline repository (not hashed).
        spec: the spec file, relative to ``root``.
        files: every file the plan depends on (spec included), relative to
            ``root`` -> SHA-256, so a changed model changes the plan's hash.
        nodes: in topological order (producers first).
        copies: names of the ``copy`` nodes, i.e. every host <-> device transfer.
    """

    name: str
    version: int
    description: str
    max_batch_size: int
    target: str
    inputs: tuple[PlanTensor, ...]
    outputs: tuple[PlanTensor, ...]
    nodes: tuple[PlanNode, ...]
    spec: str
    files: dict[str, str]
    root: str = ""
    format: int = PLAN_FORMAT

    @property
    def copies(self) -> list[PlanNode]:
        return [n for n in self.nodes if n.kind == "copy"]

    def node(self, name: str) -> PlanNode:
        return next(n for n in self.nodes if n.name == name)

    def _content(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "max_batch_size": self.max_batch_size,
            "target": self.target,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "nodes": [n.to_json() for n in self.nodes],
            "spec": self.spec,
            "files": dict(sorted(self.files.items())),
        }

    @property
    def hash(self) -> str:
        return self._hash(self._content())

    @staticmethod
    def _hash(content: dict[str, Any]) -> str:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        content = self._content()
        return {**content, "root": self.root, "hash": self._hash(content)}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Rebuild a Plan; raises ``ValueError`` if the format is unknown or the hash is wrong."""
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {data.get('format')!r}; this dagserve reads {PLAN_FORMAT}")
        plan = cls(
            name=data["name"],
            version=data["version"],
            description=data["description"],
            max_batch_size=data["max_batch_size"],
            target=data["target"],
            inputs=tuple(PlanTensor.from_json(t) for t in data["inputs"]),
            outputs=tuple(PlanTensor.from_json(t) for t in data["outputs"]),
            nodes=tuple(PlanNode.from_json(n) for n in data["nodes"]),
            spec=data["spec"],
            files=dict(data["files"]),
            root=data.get("root", ""),
        )
        if "hash" in data and data["hash"] != plan.hash:
            raise ValueError("plan content does not match its hash (edited by hand?); compile it again")
        return plan

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
