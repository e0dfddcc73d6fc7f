"""Every declared config key: its Pulumi.yaml type, default and description.

Pulumi.yaml mirrors this tuple (a test checks), and the README's config table lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

PROJECT: Final = "nocturna-infra"


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"


@dataclass(frozen=True)
class ConfigKey:
    """One declared config key: its Pulumi.yaml type, default and description."""

    name: str
    type: str  # string | integer | boolean | object | array (Pulumi.yaml types)
    default: Any
    description: str
    secret: bool = False
    items: str | None = None
    """Element type of an `array` key (Pulumi.yaml requires `items` for arrays)."""


CONFIG_SCHEMA: Final[tuple[ConfigKey, ...]] = (
    ConfigKey(
        "environment",
        "string",
        "production",
        "Kind of stack: production (blue/green slots) or staging (one container).",
    ),
    ConfigKey(
        "activeSlot",
        "string",
        "blue",
        "Production slot that Nginx routes to: blue or green. Staging accepts only blue.",
    ),
    ConfigKey(
        "apiKey",
        "string",
        None,
        "API_KEY given to the service. Set with `pulumi config set --secret apiKey`.",
        secret=True,
    ),
    ConfigKey(
        "serviceName",
        "string",
        "nocturna-chart",
        "Prefix of container names: <serviceName>-blue, -green, -staging.",
    ),
    ConfigKey(
        "networkName", "string", "nocturna-network", "Docker network the service containers join."
    ),
    ConfigKey(
        "imageName",
        "string",
        "nocturna-chart-service",
        "Local image repository; the tag is the environment name.",
    ),
    ConfigKey(
        "buildContext",
        "string",
        "../nocturna-image",
        "Service checkout to build, relative to this project directory.",
    ),
    ConfigKey(
        "dockerfile",
        "string",
        "Dockerfile",
        "Dockerfile to build with, relative to this project directory.",
    ),
    ConfigKey(
        "baseImage",
        "string",
        "node:20-slim",
        "Base image passed as the BASE_IMAGE build argument (must exist locally or be pullable).",
    ),
    ConfigKey(
        "extraCaCertsDir",
        "string",
        "",
        "Directory of extra CA certificates (*.crt, PEM) the image must trust, e.g. "
        "/usr/local/share/ca-certificates behind a TLS-intercepting proxy. Empty: none.",
    ),
    ConfigKey(
        "buildArgs",
        "object",
        {},
        "Extra build arguments (name -> string), e.g. VERSION and REVISION.",
    ),
    ConfigKey(
        "platform",
        "string",
        "linux/amd64",
        "Platform of the image build: linux/amd64, linux/amd64/v2, linux/amd64/v3, linux/arm64, "
        "linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x or linux/riscv64.",
    ),
    ConfigKey("appPort", "integer", 3011, "Port the service listens on inside its container."),
    ConfigKey("bluePort", "integer", 3014, "Host port of the blue slot."),
    ConfigKey("greenPort", "integer", 3012, "Host port of the green slot."),
    ConfigKey("stagingPort", "integer", 3013, "Host port of the staging container."),
    ConfigKey(
        "bindAddress",
        "string",
        "127.0.0.1",
        "Host address the slot ports are published on: a loopback address, unless "
        "allowNonLoopbackBind is true.",
    ),
    ConfigKey(
        "allowNonLoopbackBind",
        "boolean",
        False,
        "Opt-in to publish the slot ports on a non-loopback bindAddress (e.g. 0.0.0.0), where "
        "clients can reach the slots without Nginx.",
    ),
    ConfigKey(
        "healthPath",
        "string",
        "/health",
        "HTTP path of the service's health check: letters, digits and . _ ~ / - % ? = &.",
    ),
    ConfigKey(
        "healthContains",
        "string",
        '"status":"healthy"',
        "Text the health response must contain before a switch, so another service "
        "answering 200 on the port is refused. Empty: the status code alone.",
    ),
    ConfigKey("healthIntervalSeconds", "integer", 10, "Docker health check interval."),
    ConfigKey(
        "healthTimeoutSeconds",
        "integer",
        5,
        "Docker health check timeout; must be below the interval.",
    ),
    ConfigKey(
        "healthRetries",
        "integer",
        3,
        "Failed Docker health checks before a container counts as unhealthy.",
    ),
    ConfigKey(
        "healthStartPeriodSeconds",
        "integer",
        30,
        "Grace period after start during which failed health checks do not count (at least 1: "
        "Docker reads 0 as the image's own start period).",
    ),
    ConfigKey("memoryMb", "integer", 1024, "Memory limit of each container, in MiB."),
    ConfigKey(
        "memoryReservationMb",
        "integer",
        512,
        "Memory reservation (soft limit) of each container, in MiB.",
    ),
    ConfigKey(
        "cpus",
        "string",
        "0.9",
        "CPU limit of each container, e.g. 0.9; declared in the form the docker provider "
        "reads back (1 becomes 1.0).",
    ),
    ConfigKey("shmSizeMb", "integer", 512, "Size of /dev/shm in each container, in MiB."),
    ConfigKey(
        "tmpfsSizeMb",
        "integer",
        256,
        "Size of each writable tmpfs (/tmp, /home/node/.config), in MiB.",
    ),
    ConfigKey(
        "stopTimeoutSeconds",
        "integer",
        40,
        "Seconds Docker waits after SIGTERM before SIGKILL; the service drains for up to 30 s.",
    ),
    ConfigKey("logMaxSizeMb", "integer", 10, "Size at which a container log file rotates, MiB."),
    ConfigKey("logMaxFiles", "integer", 5, "Rotated log files kept per container."),
    ConfigKey(
        "maxProcesses",
        "integer",
        4096,
        "Process and thread limit (RLIMIT_NPROC) of the service's user, uid 1000, counted over "
        "every process of that uid on the host; stops a fork bomb before it exhausts PIDs.",
    ),
    ConfigKey(
        "env",
        "object",
        {},
        "Extra environment variables (name -> value) for the service. Set with --secret "
        "(pulumi config set --secret --path env.NAME value) to keep every env value secret.",
    ),
    ConfigKey(
        "puppeteerExecutablePath",
        "string",
        "/usr/bin/chromium-headless-shell",
        "Browser binary inside the image (PUPPETEER_EXECUTABLE_PATH): "
        "/usr/bin/chromium-headless-shell, or /usr/bin/chromium with buildArgs.CHROMIUM_PACKAGE "
        "chromium (the full browser); another path only for an image of your own.",
    ),
    ConfigKey(
        "upstreamFile",
        "string",
        "/etc/nginx/upstreams/nocturna-img-production.conf",
        "Nginx upstream file the switch owns: one group per slot, rewritten when servers change.",
    ),
    ConfigKey(
        "upstreamName",
        "string",
        "nocturna-img-production",
        "Name of the Nginx upstream block in upstreamFile.",
    ),
    ConfigKey(
        "selectionDir",
        "string",
        "/var/lib/nocturna/switch",
        "Root-owned directory of the selection files the site config tests to pick the live "
        "slot (<upstreamName>.<slot>); must match the path in the shipped Nginx site.",
    ),
    ConfigKey(
        "nginxTestCommand", "string", "nginx -t", "Command that validates the Nginx configuration."
    ),
    ConfigKey("nginxReloadCommand", "string", "nginx -s reload", "Command that reloads Nginx."),
    ConfigKey(
        "nginxStartCommand",
        "string",
        "nginx",
        "Command that starts Nginx when the switch's reload fails because none runs (a fresh "
        "host: the upstream file the site includes is written and tested first). Empty: never.",
    ),
    ConfigKey(
        "nginxPidFile",
        "string",
        "/run/nginx.pid",
        "Pid file of the Nginx master that nginxReloadCommand reloads: after a reload the "
        "switch flips the selection only once every old worker has exited or is shutting "
        "down. Empty: flip at once (old workers may send a few requests to the slot's "
        "previous servers).",
    ),
    ConfigKey(
        "reloadTimeoutSeconds",
        "integer",
        30,
        "How long the switch waits for the old workers after a reload before it fails and "
        "restores.",
    ),
    ConfigKey(
        "verifyUrl",
        "string",
        "http://127.0.0.1:8099/health",
        "URL on Nginx's loopback verification server (nginx/nocturna-chart.conf) that proves, "
        "after each switch, that Nginx reaches the new slot. Empty: skip.",
    ),
    ConfigKey(
        "smokePath",
        "string",
        "",
        "Extra path probed on the target before switching (GET, expects 200); "
        "empty: health path only.",
    ),
    ConfigKey(
        "smokeChecks",
        "array",
        [],
        "Requests the target slot must answer correctly after its health probes and before "
        "any traffic moves (name, method, path, headers with ${API_KEY} or ${<env variable>}, "
        "body or bodyFile inside the project, "
        "expectStatus, expectContains, expectJsonField/expectJsonValue, timeoutSeconds); "
        "see docs/switch.md.",
        items="object",
    ),
    ConfigKey(
        "watchSeconds",
        "integer",
        30,
        "After a switch, how long the new slot is watched through Nginx (its traffic in "
        "watchLog, plus probes) before the switch succeeds; failures switch back. 0: no watch.",
    ),
    ConfigKey(
        "watchErrorPercent",
        "integer",
        5,
        "Share of the new slot's requests answered with 5xx during the watch (once "
        "watchMinRequests were seen) that switches back.",
    ),
    ConfigKey(
        "watchMinRequests",
        "integer",
        20,
        "Requests the new slot must have answered before watchErrorPercent is judged.",
    ),
    ConfigKey(
        "watchFailedProbes",
        "integer",
        3,
        "Consecutive failed probes through Nginx during the watch that switch back.",
    ),
    ConfigKey(
        "watchLog",
        "string",
        "/var/log/nginx/nocturna-slots.log",
        "JSON access log of the public site that the watch reads (the shipped site writes it; "
        "see nginx/nocturna-chart.conf).",
    ),
    ConfigKey(
        "watchStartedLog",
        "string",
        "/var/log/nginx/nocturna-slots-started.log",
        "JSON log of each public request as it starts (the shipped site's mirror "
        "subrequest): the watch sees requests in flight, fails a class on one hung past "
        "watchRequestTimeoutSeconds, and waits for them after the window. Empty: completions "
        "only (hung requests are seen only when Nginx gives up on them).",
    ),
    ConfigKey(
        "watchRequestTimeoutSeconds",
        "integer",
        60,
        "A request of the new slot in flight this long, or answered this slowly, fails its "
        "route class; also the most the watch waits after the window for requests in flight. "
        "Match proxy_read_timeout of the site.",
    ),
    ConfigKey(
        "watchBaselineSeconds",
        "integer",
        300,
        "How much of the previous slot's traffic before the switch (from watchLog) the watch "
        "compares, per route class, with the new slot's: 5xx share, p50, p95. 0: no "
        "comparison.",
    ),
    ConfigKey(
        "watchRegressionFactor",
        "integer",
        3,
        "A route class whose 5xx share (at least 1% counted for the old slot) or p95 "
        "(at least 0.1 s) is this many times the previous slot's fails the watch, once both "
        "saw its minRequests. 0: show the comparison, never fail on it.",
    ),
    ConfigKey(
        "watchRoutes",
        "array",
        [],
        "Route classes the watch judges on their own, each against its own minRequests and "
        "errorPercent (default: watchMinRequests, watchErrorPercent): objects with method "
        "(GET, POST, ... or *) and pathPrefix, e.g. the render route. Other requests are "
        "classed by method alone (GET *); 4xx never count. See docs/switch.md.",
        items="object",
    ),
    ConfigKey(
        "watchExcludePaths",
        "array",
        ["/health"],
        "Path prefixes whose requests the watch ignores (health polls say nothing about "
        "what clients get).",
        items="string",
    ),
    ConfigKey(
        "watchProbePath",
        "string",
        "",
        "Light GET path the watch probes through Nginx's verification server every few "
        "seconds; never a heavy request (it runs in a loop). Empty: the verifyUrl path.",
    ),
    ConfigKey(
        "canarySteps",
        "string",
        "",
        "Progressive switch (production, needs the watch): percent of requests sent to the new "
        "slot at each step before the full flip, rising, each 1-99, e.g. 5,25,50; each step is "
        "judged against the old slot on the same minutes per route class. Empty: off.",
    ),
    ConfigKey(
        "canaryKey",
        "string",
        "request",
        "What a canary step splits on: request (each request drawn anew), client (the client "
        "address) or cookie:<name>, so one user stays on one version.",
    ),
    ConfigKey(
        "canaryMinRequests",
        "integer",
        20,
        "Requests of each route class the new slot must serve before a canary step passes.",
    ),
    ConfigKey(
        "canaryStepSeconds",
        "integer",
        300,
        "Longest canary step; a step with too few requests by then passes on what it saw.",
    ),
    ConfigKey("probeAttempts", "integer", 30, "Health probes of the target before giving up."),
    ConfigKey("probeIntervalSeconds", "integer", 2, "Seconds between health probes."),
    ConfigKey(
        "probeTimeoutSeconds",
        "integer",
        5,
        "Total deadline of one probe request (connect, headers and body; a trickling answer "
        "is cut at it).",
    ),
    ConfigKey(
        "routerPython",
        "string",
        "venv/bin/python",
        "Python that runs the switch (python -m nocturna_infra.switch), relative to "
        "this project directory or absolute.",
    ),
    ConfigKey(
        "stateStack",
        "string",
        "",
        "Stack whose outputs hold the previous deployment (which image each slot runs). "
        "Empty: this stack itself, as the backend names it (<organization>/<project>/<stack> "
        "on Pulumi Cloud, the bare stack name on a self-managed backend).",
    ),
    ConfigKey(
        "hosts",
        "array",
        [],
        "Docker hosts running the slots, one Nginx in front (docs/hosts.md): objects with "
        "name, dockerHost (unix:///path or ssh://user@host[:port]; may be empty for the "
        "first host: the default docker provider), sshOpts (ssh arguments from an "
        "allow-list: identity and known-hosts files, StrictHostKeyChecking=yes, port, user, "
        "timeouts; docs/hosts.md), "
        "publishAddress (IP the ports are published on; the first host defaults to "
        "bindAddress) and nginxAddress (how Nginx reaches that host; default "
        "publishAddress). Empty: one local host.",
        items="object",
    ),
)

SCHEMA_BY_NAME: Final = {key.name: key for key in CONFIG_SCHEMA}
