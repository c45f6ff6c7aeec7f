"""Use cases: orchestrate ports, one module per capability."""
