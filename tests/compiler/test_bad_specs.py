"""The corpus of broken specs: each states, in its header, every diagnostic it must produce.

A header line ``# expect: CODE@LINE`` names one diagnostic by code and line; the
set of (code, line) of ALL diagnostics of the spec must equal the header's set, so
a missing diagnostic, an extra (cascading) one, or one at the wrong line all fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dagserve.diagnostics import CODES, render_json, render_text

from .conftest import SPECS, codes, compile_spec_file

BAD = sorted((SPECS / "bad").glob("*.yaml"))
_EXPECT = re.compile(r"^#\s*expect:\s*([A-Z][A-Z-]*)@(\d+)\s*$")


def expected(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _EXPECT.match(line)
        if match:
            out.append((match.group(1), int(match.group(2))))
        elif not line.startswith("#"):
            break
    return sorted(out)


def test_corpus_is_large_and_every_spec_states_what_it_expects() -> None:
    assert len(BAD) >= 45
    for path in BAD:
        assert expected(path), f"{path.name} has no '# expect: CODE@LINE' header"


def test_corpus_uses_only_documented_codes() -> None:
    used = {code for path in BAD for code, _ in expected(path)}
    assert used <= set(CODES), used - set(CODES)


def test_corpus_covers_the_required_codes() -> None:
    used = {code for path in BAD for code, _ in expected(path)}
    required = set(CODES) - {"E-IO", "E-EXTRA", "E-INTERNAL"}
    assert required <= used, f"no bad spec for {sorted(required - used)}"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_spec_reports_exactly_the_expected_diagnostics(path: Path) -> None:
    result = compile_spec_file(path)
    assert codes(result) == expected(path), render_text(result.diagnostics)
    assert all(d.code != "E-INTERNAL" for d in result.diagnostics)
    if any(code.startswith("E-") for code, _ in expected(path)):
        assert result.plan is None and not result.ok
    else:
        assert result.plan is not None and result.ok


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_every_diagnostic_has_a_position_and_a_message(path: Path) -> None:
    for d in compile_spec_file(path).diagnostics:
        assert d.span is not None and d.span.file == str(path)
        assert d.span.line >= 1 and d.span.col >= 1
        assert d.message and "Traceback" not in d.message


def test_many_errors_are_all_reported_in_one_run() -> None:
    result = compile_spec_file(SPECS / "bad" / "many_errors.yaml")
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert {d.code for d in errors} == {"E-REF", "E-OP", "E-PARAM", "E-PATH"}
    assert [d.span.line for d in result.diagnostics if d.span] == sorted(
        d.span.line for d in result.diagnostics if d.span
    ), "diagnostics are sorted by position"


def test_did_you_mean_suggestions() -> None:
    def message(name: str) -> str:
        (d,) = [d for d in compile_spec_file(SPECS / "bad" / name).diagnostics if d.severity == "error"]
        return d.message

    assert message("unknown_op.yaml").endswith("did you mean 'tensor.identity'?")
    assert "did you mean 'color'?" in message("unknown_param.yaml")
    assert "did you mean 'decode'?" in message("ref_typo_node.yaml")
    assert "did you mean 'image'?" in message("ref_typo_input.yaml")
    assert "did you mean 'image'?" in message("output_missing_port.yaml")
    assert "did you mean 'params'?" in message("unknown_key_node.yaml")
    assert "did you mean 'images'?" in message("model_input_name.yaml")


def test_json_rendering_carries_codes_and_positions() -> None:
    result = compile_spec_file(SPECS / "bad" / "many_errors.yaml")
    doc = json.loads(render_json(result.diagnostics))
    assert doc["errors"] == 4 and doc["warnings"] == 1
    assert sorted((d["code"], d["line"]) for d in doc["diagnostics"]) == codes(result)
    lines = [d["line"] for d in doc["diagnostics"]]
    assert lines == sorted(lines)
    assert all({"code", "severity", "message", "file", "line", "col", "end_line", "end_col"} <= set(d)
               for d in doc["diagnostics"])


# --- golden text: the exact rendering users see -------------------------------------------------


def _render(name: str) -> str:
    path = SPECS / "bad" / name
    text = render_text(compile_spec_file(path).diagnostics)
    return text.replace(str(path), f"bad/{name}")


def test_golden_design_example_uint8_hwc_into_float_nchw_model() -> None:
    assert _render("design_example.yaml") == (
        "bad/design_example.yaml:19:22: error[E-SHAPE]: input 'images' of node 'detector' expects "
        "float32[N,3,64,64] but 'letterbox.image' produces uint8[N,64,64,3] (hwc)\n"
        " 19 |     inputs: {images: letterbox.image}\n"
        "    |                      ^^^^^^^^^^^^^^^\n"
        "  hint: add 'layout: chw' and 'dtype: float32' to the params of node 'letterbox' "
        "(if it is an image.letterbox), or insert an 'image.normalize' node\n"
        "1 error, 0 warnings"
    )


def test_golden_cycle_message_names_the_whole_path() -> None:
    assert _render("cycle_3.yaml") == (
        "bad/cycle_3.yaml:11:28: error[E-CYCLE]: the graph has a cycle: a → b → c → a\n"
        " 11 |     inputs: {x: [inputs.x, c.y]}\n"
        "    |                            ^^^\n"
        "  hint: a pipeline is a DAG: break the cycle by reading from an earlier node\n"
        "1 error, 0 warnings"
    )


def test_golden_duplicate_key() -> None:
    assert _render("dup_key_nested.yaml") == (
        "bad/dup_key_nested.yaml:12:5: error[E-DUP-KEY]: duplicate key 'op' (first defined at line 10)\n"
        " 12 |     op: tensor.cast\n"
        "    |     ^^\n"
        "  hint: YAML keeps only one of them; remove or rename the other\n"
        "1 error, 0 warnings"
    )


def test_golden_batch_above_fixed_model_batch_names_node_and_edge() -> None:
    assert _render("batch_above_model.yaml") == (
        "bad/batch_above_model.yaml:21:32: error[E-BATCH]: node 'detector' batches up to 4 items but "
        "model input 'images' (fed by 'letterbox.image') of '../models/tiny_detector_b1.onnx' has a fixed "
        "batch dimension of 1\n"
        " 21 |     batching: {max_batch_size: 4}\n"
        "    |                                ^\n"
        "  hint: set batching.max_batch_size to at most 1, or export the model with a dynamic batch dimension\n"
        "1 error, 0 warnings"
    )


def test_golden_warning_only_spec_counts_warnings() -> None:
    assert _render("dead_node.yaml").endswith("0 errors, 1 warning")
