"""Route handlers, one module per feature."""
