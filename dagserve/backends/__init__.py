"""Model backends: each reads its model's signature at compile time and runs batches at run time.

Heavy frameworks (torch, tensorrt, cupy) are imported inside functions only, so
``import dagserve`` works on a machine without them.
"""
