"""Element-wise step of the arithmetic ensembles (add_one, mul_two, identity_step).

The same file serves the three models; ``parameters.op`` in config.pbtxt picks
``add``/``mul`` (with ``parameters.value``) or ``identity``. Requests arrive
dynamically batched: each one is answered from its own input, without copies
beyond what NumPy's arithmetic needs, so Triton is measured at its best.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """An element-wise op over FP32 ``INPUT0`` -> ``OUTPUT0``."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.op = params.get("op", "identity")
        self.value = np.float32(float(params.get("value", "0")))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if self.op == "add":
                y = x + self.value
            elif self.op == "mul":
                y = x * self.value
            else:
                y = x
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", y)]))
        return responses
