"""A small function app that exercises the local host: routes, auth levels, warm-up, a timer and a queue."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
OUT = Path(os.environ.get("HOST_TEST_OUT", "."))


def _record(name: str, value: object) -> None:
    with (OUT / name).open("a", encoding="utf-8") as out:
        out.write(json.dumps(value) + "\n")


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse('{"status":"ok"}', mimetype="application/json")


@app.route(route="items/{id:int}", methods=["GET"])
async def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"id": req.route_params["id"],
                                         "principal": req.headers.get("x-ms-client-principal-id")}),
                             mimetype="application/json")


@app.route(route="files/{*rest}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"rest": req.route_params.get("rest", ""), "method": req.method}),
                             mimetype="application/json")


@app.route(route="maybe/{name?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def maybe(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"name": req.route_params.get("name")}), mimetype="application/json")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
async def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.warm_up_trigger(arg_name="warmup")
async def warm(warmup: object) -> None:
    _record("warmups.jsonl", {"warmed": True})


@app.timer_trigger(arg_name="timer", schedule="%TEST_SCHEDULE%", run_on_startup=True)
async def ticker(timer: func.TimerRequest) -> None:
    _record("ticks.jsonl", {"pastDue": timer.past_due})


@app.queue_trigger(arg_name="msg", queue_name="host-test", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="host-test-out", connection="AzureWebJobsStorage")
async def worker(msg: func.QueueMessage, out: func.Out[str]) -> None:
    body = msg.get_json()
    _record("deliveries.jsonl", {"body": body, "dequeueCount": msg.dequeue_count})
    if body.get("sleep"):
        await asyncio.sleep(float(body["sleep"]))
        _record("slept.jsonl", {"body": body})
    out.set(json.dumps({"done": body}))
    if body.get("fail"):
        raise RuntimeError("asked to fail")


@app.route(route="enqueue", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="out", queue_name="host-test", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse(status_code=202)


@app.route(route="slow", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    import asyncio

    await asyncio.sleep(2)
    return func.HttpResponse("finished")


@app.timer_trigger(arg_name="timer", schedule="%MONITORED_SCHEDULE%", run_on_startup=False)
async def hourly(timer: func.TimerRequest) -> None:
    _record("hourly.jsonl", {"pastDue": timer.past_due, "status": timer.schedule_status})
