"""`make run`: the whole bridge on this machine, stopped cleanly by Ctrl-C or SIGTERM.

    python -m local.stack [--settings local.settings.json] [--no-sync] [--no-demo] [--timers] [--instances N]

In order: the local CA (local.tls); Azurite (data in .local/azurite); the Entra simulator with the
demo tenant and the Key Vault emulator, when their packages are present; local.settings.json written
from local.settings.sample.json when missing (with a fresh function key); the function host with the
environment that points the app at all of them; then one sync of the demo connection, the job the
timer would run; then the passkey demo (local.demo_passkey): a demo device registers a passkey for a
demo user through the HTTP API, and the passkey is revoked when the device is removed, as the audit
log shows. It prints the URLs, the demo connection and the function key, and waits. A second run
reuses the certificates, the settings file and the data under .local/. Each step prints one line with
the seconds it took.

The rotation and federation timers are off unless `--timers` is given (`make run TIMERS=1`), so that
an hourly rotation does not fire in the middle of a session: the host gets the app settings
`AzureWebJobs.<name>.Disabled=true` for them, as Azure would, and runs either on demand through its
admin endpoint (`POST /admin/functions/<name>` with the master key; docs/local-host.md).

Preferred ports (host 7071, simulator 8443, vault 8444, Azurite 10000-10002) are used when free;
otherwise free ones are taken, and the environment handed to the host says which.

The simulator serves a second tenant beside the demo one (Fabrikam), and the host gets a second
connection to it (`fabrikam`, signing in with the demo app's client secret, which the stack keeps in
the vault), so the two connections' syncs run side by side. `--instances N` runs N hosts (each its own
process and port) on the same storage, as Flex Consumption scales out.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from local.demo_passkey import demo_line
from local.eventgrid.process import RunningTopic, demo_events, stack_settings
from local.eventgrid.process import running as eventgrid_running
from local.host.process import RunningHost, running_instances
from local.host.process import running as host_running
from local.servers import ROOT, ManagedProcess, azurite, free_port, port_open, python_module
from local.tls import TlsFiles, ensure_tls

LOCAL = ROOT / ".local"
LOGS = LOCAL / "logs"
SAMPLE = ROOT / "local.settings.sample.json"
DEMO_CONNECTION = "demo"
#: Vault roles of the demo identities, so the app (managed identity) and the demo app can use secrets.
VAULT_ROLE = "Key Vault Secrets Officer"


class Stop(Exception):
    """SIGTERM arrived: unwind and stop everything."""


#: Timers that change things in the tenant on their own; off in `make run` unless --timers.
OPTIONAL_TIMERS = ("rotation_timer", "federation_monitor")


def timer_settings(timers: bool) -> dict[str, str]:
    """App settings that turn the optional timers off (none when they are wanted)."""
    return {} if timers else {f"AzureWebJobs.{name}.Disabled": "true" for name in OPTIONAL_TIMERS}


class Steps:
    """One line per start-up step, with the seconds since the previous one."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def say(self, line: str) -> None:
        """Print `line` with the time the step took."""
        now = time.monotonic()
        print(f"{line} ({now - self.last:.1f} s)", flush=True)
        self.last = now


#: The host's environment and URL while the stack runs: `python -m shared.cli` finds and uses it by itself.
ENV_FILE = ROOT / ".local" / "stack-env.json"


def port(preferred: int) -> int:
    """`preferred` when nothing listens on it, else a free port."""
    return preferred if not port_open(preferred) else free_port()


def available(package: str) -> bool:
    """Whether a local stand-in's package is present in this checkout."""
    return importlib.util.find_spec(package) is not None


def ensure_settings(path: Path) -> tuple[dict[str, Any], bool]:
    """local.settings.json, written from the sample (with a new function key) when missing."""
    created = False
    if not path.exists():
        data = json.loads(SAMPLE.read_text(encoding="utf-8"))
        data["FunctionKeys"] = {"default": secrets.token_urlsafe(24)}
        data["MasterKey"] = secrets.token_urlsafe(32)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        created = True
    settings: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return settings, created


def base_environment(tls: TlsFiles, storage: str) -> dict[str, str]:
    """What every local process needs: storage, and trust in the local CA."""
    return {"AzureWebJobsStorage": storage, "LOCAL_CA_FILE": str(tls.ca), "SSL_CERT_FILE": str(tls.bundle),
            "REQUESTS_CA_BUNDLE": str(tls.bundle)}


@contextlib.contextmanager
def stand_ins(tls: TlsFiles, env: dict[str, str], steps: Steps | None = None) -> Iterator[list[str]]:
    """Start the Entra simulator and the vault emulator when present; add their settings to `env`.

    With `steps`, each line is printed as its server is up (with the time it took) rather than returned.
    """
    def say(line: str) -> None:
        if steps is None:
            lines.append(line)
        else:
            steps.say(line)

    lines: list[str] = []
    with contextlib.ExitStack() as stack:
        if not available("local.entra"):
            lines.append("entra simulator: not in this checkout (App Service Authentication emulation is off)")
            yield lines
            return
        from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_PRINCIPAL_ID, IDENTITY_PRINCIPAL_ID
        from local.entra.process import running as entra_running

        identity_header = secrets.token_urlsafe(24)
        entra = stack.enter_context(entra_running(data_dir=LOCAL / "entra", log_path=LOGS / "entra.log",
                                                  port=port(8443), identity_header=identity_header,
                                                  more_tenants=("fabrikam",)))
        env.update({"LOCAL_ENTRA_URL": entra.url, "IDENTITY_ENDPOINT": f"{entra.url}/msi/token",
                    "IDENTITY_HEADER": identity_header,
                    # The host validates bearer tokens for the bridge's own API against the simulator.
                    "LOCAL_AUTH_ISSUER": f"{entra.url}/{entra.tenant_id}/v2.0",
                    "LOCAL_AUTH_AUDIENCE": BRIDGE_CLIENT_ID})
        say(f"entra simulator: {entra.url} (tenants {', '.join(entra.tenant_ids)}; admin API {entra.url}/_sim/)")
        # Attestation trust: the simulator also serves a test FIDO metadata blob signed by the local CA.
        from local.mds import root_setting

        env.update({"FIDO_MDS_URL": f"{entra.url}/mds3/", "FIDO_MDS_ROOT_CERT": root_setting(tls)})
        if available("local.vault"):
            from local.vault.process import running as vault_running

            roles = LOCAL / "vault" / "roles.json"
            roles.parent.mkdir(parents=True, exist_ok=True)
            granted = json.loads(roles.read_text(encoding="utf-8") or "{}") if roles.exists() else {}
            for principal in (IDENTITY_PRINCIPAL_ID, BRIDGE_PRINCIPAL_ID):
                granted.setdefault(principal, [VAULT_ROLE])
            roles.write_text(json.dumps(granted, indent=2), encoding="utf-8")
            vault = stack.enter_context(vault_running(data_dir=LOCAL / "vault", authority=entra.url,
                                                      tenant=entra.tenant_id, port=port(8444), roles_file=roles,
                                                      log_path=LOGS / "vault.log", tls=tls))
            env["KEY_VAULT_URL"] = vault.url
            keep_second_secret(vault.url, entra.url, entra.tenant_id, env["LOCAL_CA_FILE"])
            say(f"key vault emulator: {vault.url}")
        else:
            lines.append("key vault emulator: not in this checkout")
        yield lines


#: The second demo connection: the simulator's second tenant, signing in with a client secret from the vault.
SECOND_CONNECTION = "fabrikam"
SECOND_SECRET = "fabrikam-client-secret"  # noqa: S105 - the name of a vault secret, not a secret


def second_connection() -> dict[str, Any]:
    """The connection document of the second demo tenant."""
    from local.entra.demo import BRIDGE_CLIENT_ID, SECOND_DOMAIN, SECOND_TENANT_ID

    return {"name": SECOND_CONNECTION, "tenantId": SECOND_TENANT_ID, "cloud": "local",
            "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": SECOND_SECRET},
            "domains": [SECOND_DOMAIN], "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                                                     "rotation": {"enabled": True, "group": "Bridge Rotation"}}}


def with_second_connection(settings: dict[str, Any]) -> dict[str, str]:
    """CONNECTIONS for the host's environment: the settings file's, plus the second demo connection when
    the file holds the demo connection and nothing on the second tenant (else nothing is changed)."""
    from local.entra.demo import SECOND_TENANT_ID

    try:
        connections = json.loads(str(settings.get("Values", {}).get("CONNECTIONS") or "[]"))
    except json.JSONDecodeError:
        return {}
    if not isinstance(connections, list) or not any(
            isinstance(c, dict) and c.get("name") == DEMO_CONNECTION for c in connections) or any(
            isinstance(c, dict) and c.get("tenantId") == SECOND_TENANT_ID for c in connections):
        return {}
    return {"CONNECTIONS": json.dumps([*connections, second_connection()])}


def keep_second_secret(vault_url: str, entra_url: str, tenant_id: str, ca: str) -> None:
    """Put the demo app's client secret in the vault for the second connection (once)."""
    import asyncio

    from azure.identity.aio import ClientSecretCredential

    from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
    from shared.adapters.vault import KeyVaultSecretStore
    from shared.errors import NotFound

    async def keep() -> None:
        # A missing secret is expected the first time: the adapter's warning about it is not shown.
        logging.getLogger("shared.adapters.vault").setLevel(logging.ERROR)
        credential = ClientSecretCredential(tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, authority=entra_url,
                                            connection_verify=ca)
        async with credential, KeyVaultSecretStore(vault_url, credential, connection_verify=ca) as store:
            try:
                await store.get(SECOND_SECRET)
            except NotFound:
                await store.put(SECOND_SECRET, BRIDGE_CLIENT_SECRET, tags={})

    asyncio.run(keep())


def startup_jobs(settings_file: Path, env: dict[str, str], steps: Steps) -> None:
    """The start-up sync of the demo connection and, beside it, of the second one when configured."""
    names = [DEMO_CONNECTION]
    if SECOND_CONNECTION in env.get("CONNECTIONS", ""):
        names.append(SECOND_CONNECTION)
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        for line in pool.map(lambda name: startup_job(settings_file, env, name), names):
            steps.say(line)


def startup_job(settings_file: Path, env: dict[str, str], connection: str = DEMO_CONNECTION) -> str:
    """Run the main job once (a sync of one connection); one line saying how it went."""
    if not available("shared.services.sync") or "LOCAL_ENTRA_URL" not in env:
        return "start-up sync: skipped (needs the sync feature and the Entra simulator)"
    argv = python_module("shared.cli", "--settings", str(settings_file), "sync", "--connection", connection)
    log_path = LOGS / ("startup-sync.log" if connection == DEMO_CONNECTION else f"startup-sync-{connection}.log")
    for attempt in (1, 2):
        with log_path.open("ab") as log:
            done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=log,
                                  timeout=300, check=False)
        if done.returncode == 0 or attempt == 2:
            break
        # The host may have just caught up a sync run missed while the stack was down (its sync timer's
        # schedule status says so), and that run holds the connection's sync lease: try once more.
        time.sleep(5)
    summary = done.stdout.decode(errors="replace").strip().splitlines()
    outcome = summary[-1] if summary else f"exit {done.returncode}"
    if done.returncode != 0:
        return f"start-up sync of '{connection}': failed ({outcome}); see {log_path.relative_to(ROOT)}"
    return f"start-up sync of '{connection}': {outcome}"


def passkey_demo(host: RunningHost, function_key: str, env: dict[str, str]) -> str:
    """Run the passkey demo against the host; one line saying how it went (a failure does not stop the stack)."""
    if "LOCAL_ENTRA_URL" not in env:
        return "passkey demo: skipped (needs the Entra simulator)"
    try:
        return demo_line(host.url, function_key, connection=DEMO_CONNECTION)
    except Exception as exc:  # the demo is a show-case: whatever happens, the stack keeps running
        return f"passkey demo: failed ({type(exc).__name__}: {exc})"


def describe_demo(settings: dict[str, Any], name: str = DEMO_CONNECTION) -> str:
    """The demo connection (or another, by name) as configured, in one line."""
    try:
        connections = json.loads(str(settings.get("Values", {}).get("CONNECTIONS") or "[]"))
    except json.JSONDecodeError:
        return "demo connection: CONNECTIONS in local.settings.json is not valid JSON"
    demo = next((c for c in connections if isinstance(c, dict) and c.get("name") == name), None)
    if demo is None:
        return "demo connection: not configured (CONNECTIONS in local.settings.json)"
    enabled = [name for name, feature in (demo.get("features") or {}).items() if feature.get("enabled")]
    return (f"demo connection: '{demo.get('name')}' tenant {demo.get('tenantId')} cloud {demo.get('cloud')} "
            f"auth {demo.get('auth', {}).get('kind')}; features: {', '.join(enabled) or 'none'}")


def wait(processes: list[ManagedProcess]) -> None:
    """Block until Ctrl-C, SIGTERM, or a child exits on its own."""
    while True:
        for proc in processes:
            if proc.proc is not None and proc.proc.poll() is not None:
                print(f"\n{proc.name} exited with {proc.proc.returncode}; stopping. Its log:\n{proc.tail(20)}",
                      flush=True)
                return
        time.sleep(0.5)


def run(settings_path: Path, *, sync: bool, demo: bool = True, timers: bool = False, instances: int = 1) -> int:
    """Start everything, print what runs where, wait, stop."""
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Stop

    signal.signal(signal.SIGTERM, terminate)
    steps = Steps()
    LOGS.mkdir(parents=True, exist_ok=True)
    tls = ensure_tls()
    settings, created = ensure_settings(settings_path)
    keys = settings.get("FunctionKeys") or {}
    function_key = str(next(iter(keys.values()), ""))
    steps.say(f"local stack: logs in {LOGS.relative_to(ROOT)}/, settings in {settings_path.name}"
              f"{' (new, from the sample)' if created else ''}, local CA in .local/tls")
    try:
        with contextlib.ExitStack() as stack:
            storage = stack.enter_context(azurite(LOCAL / "azurite", LOGS / "azurite.log",
                                                  (port(10000), port(10001), port(10002))))
            env = base_environment(tls, storage)
            steps.say("azurite: running (storage connection string in the host's AzureWebJobsStorage)")
            for line in stack.enter_context(stand_ins(tls, env, steps)):
                print(line, flush=True)
            topic: RunningTopic = stack.enter_context(eventgrid_running(
                data_dir=LOCAL / "eventgrid", log_path=LOGS / "eventgrid.log", port=port(8445), tls=tls))
            env.update(stack_settings(topic))
            steps.say(f"event grid stand-in: {topic.endpoint} (docs/events.md)")
            env.update(timer_settings(timers))
            if "LOCAL_ENTRA_URL" in env:
                env.update(with_second_connection(settings))
            if instances > 1:
                hosts = stack.enter_context(running_instances(
                    instances, settings_file=settings_path, function_key=function_key, log_dir=LOGS, env=env,
                    first_port=port(7071)))
                host = hosts[0]
                steps.say(f"function host: {instances} instances, {', '.join(h.url for h in hosts)} (logs "
                          f"{LOGS.relative_to(ROOT)}/host-<n>.log; timers on the first)")
            else:
                host = stack.enter_context(host_running(
                    settings_file=settings_path, function_key=function_key, log_path=LOGS / "host.log", env=env,
                    port=port(7071)))
                hosts = [host]
                steps.say(f"function host: {host.url}/api (health: {host.url}/api/health)")
            print("timers: all on (--timers)" if timers else
                  f"timers: {' and '.join(OPTIONAL_TIMERS)} are off (make run TIMERS=1, or --timers, turns them "
                  f"on; run one now with POST {host.url}/admin/functions/<name> and the master key)", flush=True)
            # Operator commands (make doctor) need the same environment as the host while the stack runs.
            ENV_FILE.write_text(json.dumps({**env, "LOCAL_FUNCTIONS_URL": host.url}), encoding="utf-8")
            ENV_FILE.chmod(0o600)
            stack.callback(ENV_FILE.unlink, missing_ok=True)
            print(describe_demo(settings), flush=True)
            if SECOND_CONNECTION in env.get("CONNECTIONS", ""):
                print(describe_demo({"Values": {"CONNECTIONS": env["CONNECTIONS"]}}, SECOND_CONNECTION), flush=True)
            print(f"function key: {function_key}  (send as x-functions-key, or ?code=)", flush=True)
            print(f"SCIM base URL of the demo connection: {host.url}/api/scim/v2/{DEMO_CONNECTION} (docs/export.md)",
                  flush=True)
            if sync:
                startup_jobs(settings_path, env, steps)
            if demo:
                steps.say(passkey_demo(host, function_key, env))
                steps.say(demo_events(topic))
            print("ready; Ctrl-C stops everything", flush=True)
            wait([h.process for h in hosts])
    except (KeyboardInterrupt, Stop):
        print("\nstopping...", flush=True)
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the stack."""
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=str(ROOT / "local.settings.json"))
    parser.add_argument("--no-sync", action="store_true", help="skip the start-up sync of the demo connection")
    parser.add_argument("--no-demo", action="store_true", help="skip the passkey demo (device, passkey, removal)")
    parser.add_argument("--instances", type=int, default=1,
                        help="run this many function host instances (each its own process) on the same storage")
    parser.add_argument("--timers", action="store_true",
                        help=f"run the {' and '.join(OPTIONAL_TIMERS)} timers on their schedules (off by default)")
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    return run(Path(args.settings).resolve(), sync=not args.no_sync, demo=not args.no_demo, timers=args.timers,
               instances=args.instances)


if __name__ == "__main__":
    sys.exit(main())
