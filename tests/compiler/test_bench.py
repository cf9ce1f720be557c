"""The compile benchmark's generated pipelines stay valid (so the benchmark measures real work)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .conftest import compile_spec_file

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "compile_bench.py"


@pytest.fixture(scope="module")
def generate():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("compile_bench", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


@pytest.mark.parametrize("n", [1, 5, 10, 57, 200])
def test_generated_pipeline_has_n_nodes_and_compiles_without_any_diagnostic(generate, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                             n: int) -> None:
    path = tmp_path / "gen.yaml"
    path.write_text(generate(n))
    for target in ("cpu", "gpu"):
        result = compile_spec_file(path, target=target, root=tmp_path)
        assert result.diagnostics == [], [d.one_line() for d in result.diagnostics[:5]]
        assert len([x for x in result.plan.nodes if x.kind != "copy"]) == n


def test_generated_pipeline_mixes_chains_fan_in_and_image_ops(generate) -> None:  # type: ignore[no-untyped-def]
    text = generate(300)
    for op in ("image.decode", "image.resize", "image.normalize", "tensor.concat", "tensor.slice",
               "tensor.transpose", "math.add", "math.mul", "tensor.identity", "tensor.cast"):
        assert f"op: {op}\n" in text, op
    assert generate(300) == text  # deterministic
