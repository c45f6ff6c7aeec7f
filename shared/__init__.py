"""The bridge's core: configuration, domain logic, use cases and adapters. Importable without azure.functions."""

__version__ = "0.1.0"
