"""Built-in ops: each declares ports, a params schema, a type rule and its kernels."""
