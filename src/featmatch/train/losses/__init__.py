"""Training losses, one module per method; every loss is a pure function."""
