"""The same as ``client_grpc.py`` over HTTP/REST (Triton's binary tensor extension).

    python examples/client_http.py --model classify /tmp/digit.png --url 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default="classify")
    parser.add_argument("--url", default="127.0.0.1:8000")
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(args.url)
    metadata = client.get_model_metadata(args.model)
    data = np.array([open(path, "rb").read() for path in args.images], dtype=object)
    tensor = httpclient.InferInput("image", [len(data)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    try:
        result = client.infer(args.model, [tensor])
    except InferenceServerException as exc:
        print(f"{exc.status()}: {exc.message()}", file=sys.stderr)
        return 1
    for output in metadata["outputs"]:
        value = result.as_numpy(output["name"])
        if value is not None and value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8", "replace"))(value)
        print(f"{output['name']}: {np.array2string(value, precision=3, threshold=40)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
