"""Starts the process (logging, masking, telemetry) and builds the FunctionApp from every Blueprint under functions/."""

from __future__ import annotations

import importlib
import pkgutil

import azure.functions as func

import functions
from shared import bootstrap

bootstrap.start()


def _blueprints() -> list[func.Blueprint]:
    """Every module-level `bp` Blueprint of the functions package, in module-name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(functions.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"functions.{info.name}")
        bp = getattr(module, "bp", None)
        if isinstance(bp, func.Blueprint):
            found.append(bp)
    return found


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for _bp in _blueprints():
    app.register_functions(_bp)
