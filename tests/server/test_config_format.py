"""The model config reports an image input's layout as Triton's ``format``, as image_client needs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from dagserve.api import load_plan
from dagserve.server.http import proto_to_json
from dagserve.server.triton import model_config

SPEC = """
dagserve: 1
name: images
max_batch_size: 4
inputs:
  planar: {dtype: float32, shape: [3, 32, 32], layout: chw}
  packed: {dtype: uint8, shape: [32, 32, 3], layout: hwc}
  plain: {dtype: float32, shape: [3, 32, 32]}
  gray: {dtype: uint8, shape: [32, 32], layout: hw}
outputs:
  a: pa.y
  b: pb.y
  c: pc.y
  d: pd.y
nodes:
  pa: {op: tensor.identity, inputs: {x: inputs.planar}}
  pb: {op: tensor.identity, inputs: {x: inputs.packed}}
  pc: {op: tensor.identity, inputs: {x: inputs.plain}}
  pd: {op: tensor.identity, inputs: {x: inputs.gray}}
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> mc.ModelConfig:
    path = Path(tmp_path_factory.mktemp("fmt")) / "images.yaml"
    path.write_text(textwrap.dedent(SPEC).lstrip("\n"), encoding="utf-8")
    return model_config(load_plan(str(path), target="cpu"))


def test_chw_and_hwc_inputs_report_nchw_and_nhwc(config: mc.ModelConfig) -> None:
    formats = {i.name: i.format for i in config.input}
    assert formats == {"planar": mc.ModelInput.FORMAT_NCHW, "packed": mc.ModelInput.FORMAT_NHWC,
                       "plain": mc.ModelInput.FORMAT_NONE, "gray": mc.ModelInput.FORMAT_NONE}


def test_an_image_input_passes_image_clients_checks(config: mc.ModelConfig) -> None:
    """What NVIDIA's image_client.py checks of the one input of the model it is pointed at."""
    for name in ("planar", "packed"):
        model_input = next(i for i in config.input if i.name == name)
        assert len(model_input.dims) == 3
        assert model_input.format in (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC)
        c = model_input.dims[0] if model_input.format == mc.ModelInput.FORMAT_NCHW else model_input.dims[2]
        assert c == 3


def test_the_http_config_names_the_format(config: mc.ModelConfig) -> None:
    inputs = {i["name"]: i for i in proto_to_json(config)["input"]}
    assert inputs["planar"]["format"] == "FORMAT_NCHW" and inputs["packed"]["format"] == "FORMAT_NHWC"
    assert inputs["plain"].get("format", "FORMAT_NONE") == "FORMAT_NONE"
