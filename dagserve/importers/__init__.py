"""Importers: an existing Triton model repository or TorchServe setup in, dagserve specs out.

An importer reads the other server's configuration with that server's own formats
(protobuf text format and ``model_config_pb2`` for Triton; JSON/YAML for TorchServe),
writes spec files, and records every field it could not carry over in an
:class:`~dagserve.importers.report.ImportReport`, so nothing is dropped silently.
Importers sit beside the compiler: they may compile what they wrote to check it,
but never import the runtime or the server.
"""
