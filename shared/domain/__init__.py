"""Pure logic: no I/O, no SDKs, nothing from adapters or services."""
