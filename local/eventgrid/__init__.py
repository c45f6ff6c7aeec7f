"""A local stand-in for an Azure Event Grid topic (docs/events.md)."""
