"""The run directory: config.yaml, meta.json, records.csv, summary.json and checkpoints/ (`store`),
written whole or not at all (`atomic`, `checkpoints`), mirrored to TensorBoard/MLflow (`tracking`),
with progress on the terminal (`progress`)."""
