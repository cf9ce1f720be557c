"""Model control over the protocol (load, reload, unload), shared by gRPC and HTTP.

Like Triton's ``--model-control-mode``: in mode ``none`` (the default) every
``RepositoryModelLoad``/``RepositoryModelUnload`` call is refused with Triton's
own status and message (UNAVAILABLE, HTTP 503), so no client can unload what the
server serves; ``explicit`` allows them.

A load may carry Triton's overrides, adapted to dagserve: the ``config``
parameter is the pipeline spec as JSON (the document a YAML spec file holds),
compiled instead of the spec on disk, and each ``file:<relative path>``
parameter is a file placed beside it (bytes on gRPC, base64 in HTTP JSON, as
Triton's clients send them). ``file:`` parameters need ``config``, as in Triton.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from dagserve.errors import InvalidInputError, UnavailableError
from dagserve.server.repository import Repository

__all__ = ["MODES", "REFUSED", "LoadOverride", "ModelControl", "parse_load_parameters"]

MODES = ("none", "explicit")
"""The values of ``--model-control-mode``."""

REFUSED = "explicit model load / unload is not allowed if polling is enabled"
"""Triton's message (with status UNAVAILABLE) for model control outside explicit mode."""

FILE_PREFIX = "file:"


@dataclass(frozen=True)
class LoadOverride:
    """What a load request asks to load instead of the spec on disk.

    Attributes:
        config: the spec as JSON text, or None to load from disk.
        files: relative path (POSIX, inside the spec's directory) -> content.
    """

    config: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _file_path(key: str) -> str:
    rel = key[len(FILE_PREFIX):]
    norm = posixpath.normpath(rel) if rel else ""
    if not rel or rel.startswith(("/", "~")) or "\\" in rel or norm.startswith("..") or norm == ".":
        raise InvalidInputError(f"load parameter '{key}': the file must be a relative path inside the "
                                "pipeline's directory, such as 'file:models/net.onnx'")
    return norm


def parse_load_parameters(name: str, parameters: dict[str, Any], base64_files: bool) -> LoadOverride:
    """The override of a load request's parameters (other parameters are ignored, as Triton does).

    Messages start with "failed to load 'NAME'", as Triton's do (NVIDIA's model-control
    examples check for it).

    Args:
        name: the model the request loads.
        parameters: parameter name -> value (gRPC: the oneof value; HTTP: the JSON value).
        base64_files: ``file:`` values are base64 text (HTTP) rather than bytes (gRPC).

    Raises:
        InvalidInputError: a ``config`` that is not a JSON object in a string, a
            ``file:`` value of the wrong type or bad base64, a path leaving the
            directory, or ``file:`` without ``config``.
    """
    try:
        return _parse_load_parameters(parameters, base64_files)
    except InvalidInputError as exc:
        raise InvalidInputError(f"failed to load '{name}': {exc}") from None


def _parse_load_parameters(parameters: dict[str, Any], base64_files: bool) -> LoadOverride:
    config = parameters.get("config")
    if config is not None:
        if not isinstance(config, str):
            raise InvalidInputError(f"load parameter 'config' must be a string holding the pipeline spec as "
                                    f"JSON, got {type(config).__name__}")
        try:
            document = json.loads(config, parse_constant=_no_constant)
        except (RecursionError, ValueError) as exc:
            raise InvalidInputError(f"load parameter 'config' is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidInputError(f"load parameter 'config' must be a JSON object (a pipeline spec), "
                                    f"got {type(document).__name__}")
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if not key.startswith(FILE_PREFIX):
            continue
        path = _file_path(key)
        if base64_files:
            if not isinstance(value, str):
                raise InvalidInputError(f"load parameter '{key}' must be the file's content in base64, "
                                        f"got {type(value).__name__}")
            try:
                files[path] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidInputError(f"load parameter '{key}' is not valid base64: {exc}") from None
        elif isinstance(value, bytes):
            files[path] = value
        else:
            raise InvalidInputError(f"load parameter '{key}' must be a bytes_param holding the file's content, "
                                    f"got {type(value).__name__}")
    if files and config is None:
        raise InvalidInputError(f"load parameters {', '.join(sorted(FILE_PREFIX + p for p in files))} need the "
                                "'config' parameter too: it is the spec of the files' pipeline (as in Triton)")
    return LoadOverride(config, files)


class ModelControl:
    """Load and unload, allowed only in explicit mode.

    Args:
        repository: the pipelines served.
        explicit: ``--model-control-mode=explicit``.
    """

    def __init__(self, repository: Repository, explicit: bool) -> None:
        self.repository = repository
        self.explicit = explicit

    def check(self) -> None:
        """Raises UnavailableError with Triton's message unless model control is explicit."""
        if not self.explicit:
            raise UnavailableError(f"{REFUSED} (dagserve serve: model control over the protocol is off; start the "
                                   "server with --model-control-mode=explicit to allow load and unload)")

    async def load(self, name: str, override: LoadOverride) -> None:
        """(Re)load ``name``, from the override when it carries a config."""
        self.check()
        await self.repository.load(name, override.config, override.files)

    async def unload(self, name: str) -> None:
        self.check()
        await self.repository.unload(name)
