"""Training: a generic trainer, losses as pure functions, and one recipe per method."""
