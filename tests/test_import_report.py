"""The import report: exit codes and rendering (the importers' tests check what goes into it)."""

from __future__ import annotations

import json

from dagserve.importers.report import EXIT_CONVERTED, EXIT_FAILED, EXIT_WARNINGS, ImportReport


def test_exit_code_follows_the_worst_note_and_nothing_written_is_a_failure() -> None:
    report = ImportReport()
    assert report.exit_code == EXIT_FAILED
    report.written.append("out/simple.yaml")
    report.info("simple", "max_batch_size", "mapped to max_batch_size: 8")
    assert report.exit_code == EXIT_CONVERTED
    report.warning("simple", "response_cache", "dagserve has no response cache", "cache in front of the server")
    assert report.exit_code == EXIT_WARNINGS
    report.error("seq", "sequence_batching", "sequence batching is not supported")
    assert report.exit_code == EXIT_FAILED


def test_text_names_model_field_and_what_to_do_and_json_carries_every_note() -> None:
    report = ImportReport(written=["out/a.yaml"])
    report.info("a", "platform", "onnxruntime_onnx -> model.onnx")
    report.warning("a", "model_warmup", "not converted", "give the node 'warmup:' inputs", source="a/config.pbtxt:7")
    text = report.render_text()
    assert "a/config.pbtxt:7: warning: a: model_warmup: not converted; instead: give the node" in text
    assert "platform" not in text and "platform" in report.render_text(verbose=True)
    assert text.endswith("1 spec(s) written, 1 warning(s), 0 error(s)")
    data = json.loads(report.to_json())
    assert data["exit_code"] == EXIT_WARNINGS and [n["level"] for n in data["notes"]] == ["info", "warning"]
