"""Send images to a served pipeline over gRPC with Triton's own client, print the outputs.

    dagserve serve pipelines/ &
    python examples/client_grpc.py --model classify tests/data/digit_3.png
    python examples/client_grpc.py --model detect street.jpg --url 127.0.0.1:8001

Every image file is one batch item of the pipeline's BYTES input ``image``; the
files are sent as one request (the pipelines batch up to ``max_batch_size``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="encoded image files (JPEG, PNG, WebP, BMP)")
    parser.add_argument("--model", default="classify")
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--timeout", type=float, default=10.0, help="client deadline in seconds")
    args = parser.parse_args()

    client = grpcclient.InferenceServerClient(args.url)
    metadata = client.get_model_metadata(args.model)
    data = np.array([open(path, "rb").read() for path in args.images], dtype=object)
    tensor = grpcclient.InferInput("image", [len(data)], "BYTES")
    tensor.set_data_from_numpy(data)
    try:
        result = client.infer(args.model, [tensor], client_timeout=args.timeout)
    except InferenceServerException as exc:
        print(f"{exc.status()}: {exc.message()}", file=sys.stderr)
        return 1
    for output in metadata.outputs:
        value = result.as_numpy(output.name)
        if value is not None and value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8", "replace"))(value)
        print(f"{output.name} ({output.datatype}{list(value.shape) if value is not None else ''}):")
        print(np.array2string(value, precision=3, threshold=40) if value is not None else "  (none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
