"""The only place SDKs are imported; each adapter implements a port the services declare."""
