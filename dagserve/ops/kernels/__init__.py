"""Runtime kernels of the built-in ops (imported lazily by the runtime only)."""
