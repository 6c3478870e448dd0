"""Label Studio: task and result JSON, brush RLE, labeling configs, project options and the
REST client. No torch."""
