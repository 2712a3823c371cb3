"""Training recipes: one module per method (loss on a batch + validation)."""
