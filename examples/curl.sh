#!/usr/bin/env bash
# Calling served pipelines with curl over HTTP/REST v2 (dagserve serve pipelines/ must be running).
set -euo pipefail
URL=${URL:-http://127.0.0.1:8000}

echo "== health and metadata"
curl -sf "$URL/v2/health/ready" -o /dev/null -w "ready: %{http_code}\n"
curl -s "$URL/v2/models/add_mul"; echo

echo "== add_mul with JSON tensors: OUTPUT0 = (INPUT0 + 1) * 2"
curl -s -X POST "$URL/v2/models/add_mul/infer" -H 'Content-Type: application/json' -d '{
  "inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
              "data": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]
}'; echo

echo "== a mistake gets a specific error (400)"
curl -s -X POST "$URL/v2/models/add_mul/infer" -H 'Content-Type: application/json' -d '{
  "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1,2,3]}]
}'; echo

if [ -n "${IMAGE:-}" ]; then
  echo "== classify an image file with Triton's binary tensor extension"
  size=$(stat -c %s "$IMAGE")
  header=$(printf '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":%d}}],"outputs":[{"name":"labels","parameters":{"binary_data":false}},{"name":"scores","parameters":{"binary_data":false}}]}' $((size + 4)))
  {
    printf '%s' "$header"
    python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<I', $size))"
    cat "$IMAGE"
  } | curl -s -X POST "$URL/v2/models/classify/infer" \
      -H "Inference-Header-Content-Length: ${#header}" -H 'Content-Type: application/octet-stream' \
      --data-binary @-; echo
fi
