"""Warm-up: runs when an instance is added to scale out, before it takes traffic (not on Consumption).

Signs each active connection in and opens its Graph connection, so the first request of a new instance
does not pay for them. See https://learn.microsoft.com/azure/azure-functions/functions-bindings-warmup
"""

from __future__ import annotations

import azure.functions as func
from azure.functions.warmup import WarmUpContext

from shared.bootstrap import bridge

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.warm_up_trigger(arg_name="warmup")
async def warmup(warmup: WarmUpContext) -> None:
    """Warm every active connection; failures are logged, never raised (the first request retries)."""
    await bridge().warm_up()
