"""The server: KServe v2 / Triton gRPC, HTTP/REST v2 and Prometheus metrics over a pipeline repository."""
