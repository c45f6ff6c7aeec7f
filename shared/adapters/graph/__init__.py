"""Microsoft Graph: the gateway every call goes through (gateway.py) and one module per Graph area.

Each area module builds its requests with msgraph-sdk's request builders and returns the bridge's typed
values (shared/services/ports.py), so no service reads Graph's JSON.
"""

from shared.adapters.graph.gateway import GraphGateway, SystemClock, ThrottleGovernor, graph_http_client

__all__ = ["GraphGateway", "SystemClock", "ThrottleGovernor", "graph_http_client"]
