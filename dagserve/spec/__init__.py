"""Reading pipeline specs: source-mapped YAML, the JSON Schema, the typed document."""
