"""Stand-ins for Azure on a developer machine."""
