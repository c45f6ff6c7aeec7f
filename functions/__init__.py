"""HTTP, timer and queue functions: one Blueprint per capability, thin."""
