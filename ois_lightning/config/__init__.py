"""The run configuration: the schema (every key, its range), loading YAML layers, the checks."""
