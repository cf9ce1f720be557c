"""What ``pip install dagserve`` gets: the license file, valid classifiers, typing marker, and extras
that install one ONNX Runtime and one CUDA major."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from trove_classifiers import classifiers as KNOWN_CLASSIFIERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
TOOL: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_the_declared_license_ships_as_a_file() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS" in text


def test_classifiers_are_known_and_say_typed_and_python_versions() -> None:
    found = PROJECT["classifiers"]
    assert set(found) <= KNOWN_CLASSIFIERS, set(found) - KNOWN_CLASSIFIERS
    assert "Typing :: Typed" in found
    assert not [c for c in found if c.startswith("License ::")], "PEP 639: the license expression says it"
    minimum = tuple(int(x) for x in PROJECT["requires-python"].removeprefix(">=").split("."))
    versions = [c.rsplit(" ", 1)[1] for c in found if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions and all(tuple(int(x) for x in v.split(".")) >= minimum for v in versions)


def test_the_package_is_marked_typed() -> None:
    assert (ROOT / "dagserve" / "py.typed").is_file()
    assert "py.typed" in TOOL["setuptools"]["package-data"]["dagserve"]


def test_the_server_depends_on_tritonclients_grpc_stubs_only() -> None:
    (triton,) = [r for r in PROJECT["dependencies"] if _name(r) == "tritonclient"]
    assert re.match(r"tritonclient\[grpc\]", triton), triton
    (test_triton,) = [r for r in PROJECT["optional-dependencies"]["test"] if _name(r) == "tritonclient"]
    assert "http" in test_triton and "grpc" in test_triton  # the tests and examples use both clients
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dagserve").rglob("*.py"))
    assert not re.search(r"tritonclient\.(http|utils)|from tritonclient import (http|utils)", sources)


def test_no_extra_installs_a_second_onnxruntime() -> None:
    base = {_name(r) for r in PROJECT["dependencies"]}
    assert "onnxruntime" in base
    for extra, requirements in PROJECT["optional-dependencies"].items():
        ort = [r for r in requirements if _name(r).startswith("onnxruntime")]
        assert not ort, f"[{extra}] installs {ort} beside onnxruntime: two distributions of one module"


def test_gpu_packages_agree_on_one_cuda_major() -> None:
    majors: dict[str, int] = {}
    for requirements in PROJECT["optional-dependencies"].values():
        for requirement in requirements:
            name = _name(requirement)
            match = re.search(r"-cuda(\d+?)(?:x|0)$|-cu(\d+)$", name)
            if match:
                majors[name] = int(match.group(1) or match.group(2))
    assert {"cupy-cuda13x", "nvidia-dali-cuda130", "tensorrt-cu13"} <= set(majors), majors
    assert set(majors.values()) == {13}, majors


def test_the_docs_say_how_to_get_onnxruntime_gpu() -> None:
    swap = "pip uninstall -y onnxruntime"
    backends = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert swap in backends and swap in readme
    assert "onnxruntime-gpu[cuda,cudnn]" in backends and "onnxruntime-gpu[cuda,cudnn]" in readme
    assert "cupy-cuda12x" not in PROJECT["optional-dependencies"]["gpu"]


def test_a_gpu_placement_without_onnxruntime_gpu_says_how_to_swap() -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed: there is nothing missing to report")
    from dagserve.backends import onnxruntime_backend
    from dagserve.errors import MissingExtraError
    from dagserve.runtime.devices import Device

    with pytest.raises(MissingExtraError) as caught:
        onnxruntime_backend._providers({}, Device("gpu", 0), None)
    message = str(caught.value)
    assert "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]>=1.26'" in message
    assert "docs/backends.md" in message
