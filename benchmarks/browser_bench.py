"""Chromium's headless shell against the full browser: both image variants, side by side, one run.

Run from the repository root (as root, with dockerd running or startable):

    venv/bin/python -m benchmarks.browser_bench [--renders 5]

Builds the Dockerfile from the fixture service with `CHROMIUM_PACKAGE=chromium` (the full
browser), then with `chromium-headless-shell` (the default, last, so the cache mounts end up
holding its packages), and for each variant:

- a cold build: `--no-cache`, which also starts the apt and npm cache mounts empty, so every
  `.deb` and npm package is downloaded (tests/test_dockerfile.py shows it);
- a warm rebuild after a package-list change: a copy of the Dockerfile with one more package
  (`fonts-dejavu-core`) in its apt list; the apt step re-runs, but the cache mounts still hold
  what the cold build downloaded, so only the new package is fetched (apt's "Need to get");
- image size and installed Debian packages (count and installed size) of the cold build;
- memory: the image run with the program's default container arguments (init, read-only root,
  noexec tmpfs, no capabilities, no-new-privileges, memory, shm and nproc limits), then a
  long-lived browser launched the way Puppeteer does (the image's PUPPETEER_EXECUTABLE_PATH,
  `--headless --no-sandbox`, DevTools over `--remote-debugging-pipe`) renders a chart-like SVG
  page to PNG `--renders` times, each in a new page closed afterwards, and `docker stats` reads
  the container's memory (as `docker stats` shows it, and its anonymous part) and PIDs with
  the browser still open, in the second of two such sessions (the first pays for reading the
  fresh image's files into the page cache). The fixture service itself renders without a
  browser, so this drives the browser directly.

Prints a Markdown table, the ratios, and whether the image is at least 15 % smaller
(exit 1 if not). A script, not a test: figures depend on the mirror and a shared machine.
Images and containers it creates are named `imgbench-*` and removed at the end; the build
cache stays.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nocturna_infra.settings import CHROMIUM_PACKAGES, parse_settings
from tests import docker_host
from tests.engine_api import engine

FULL, SHELL = CHROMIUM_PACKAGES[1], CHROMIUM_PACKAGES[0]
TARGET_SHRINK: Final = 0.15
EXTRA_PACKAGE: Final = "fonts-dejavu-core"
APT_STEP: Final = "apt-get install"
SETTLE_SECONDS: Final = 3.0

# Runs in the container as the service's user: launch the browser as Puppeteer does, render
# argv[1] pages over DevTools, print one JSON line, keep the browser open until stdin closes.
RENDER_SCRIPT: Final = r"""
"use strict";
const { spawn } = require("node:child_process");
const crypto = require("node:crypto");
const [renders, width, ...pages] = process.argv.slice(1);
const browser = spawn(process.env.PUPPETEER_EXECUTABLE_PATH, [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
  "--hide-scrollbars", "--mute-audio", "--user-data-dir=/tmp/bench-profile",
  "--remote-debugging-pipe", "about:blank",
], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });
let next = 0;
let buffer = "";
const calls = new Map();
let waiters = [];
browser.stdio[4].setEncoding("utf8");
browser.stdio[4].on("data", (chunk) => {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf("\0")) >= 0) {
    const message = JSON.parse(buffer.slice(0, end));
    buffer = buffer.slice(end + 1);
    const call = calls.get(message.id);
    if (call) {
      calls.delete(message.id);
      if (message.error) call.reject(new Error(JSON.stringify(message.error)));
      else call.resolve(message.result);
    }
    const matches = (w) => w.method === message.method && w.session === message.sessionId;
    for (const waiter of waiters.filter(matches)) waiter.resolve();
    waiters = waiters.filter((w) => !matches(w));
  }
});
browser.on("exit", (code) => { console.error(`browser exited ${code}`); process.exit(2); });
function send(method, params = {}, sessionId = undefined) {
  return new Promise((resolve, reject) => {
    const id = ++next;
    calls.set(id, { resolve, reject });
    browser.stdio[3].write(JSON.stringify({ id, method, params, sessionId }) + "\0");
  });
}
function once(method, session) {
  return new Promise((resolve) => waiters.push({ method, session, resolve }));
}
async function render(url) {
  const started = performance.now();
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Page.enable", {}, sessionId);
  const size = { width: Number(width), height: Number(width), deviceScaleFactor: 1, mobile: false };
  await send("Emulation.setDeviceMetricsOverride", size, sessionId);
  const loaded = once("Page.loadEventFired", sessionId);
  await send("Page.navigate", { url }, sessionId);
  await loaded;
  const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId);
  await send("Target.closeTarget", { targetId });
  const png = Buffer.from(data, "base64");
  return { ms: performance.now() - started, bytes: png.length,
           sha256: crypto.createHash("sha256").update(png).digest("hex") };
}
(async () => {
  const version = await send("Browser.getVersion");
  const results = [];
  for (let i = 0; i < Number(renders); i++) results.push(await render(pages[i % pages.length]));
  console.log(JSON.stringify({ product: version.product, results }));
  setTimeout(() => process.exit(3), 300000);
  process.stdin.on("end", () => {
    browser.removeAllListeners("exit");
    browser.kill();
    process.exit(0);
  });
  process.stdin.resume();
})().catch((error) => { console.error(error); process.exit(1); });
"""


@dataclass(frozen=True)
class Build:
    seconds: float
    apt_seconds: float
    downloaded: str
    """apt's "Need to get ..." figure: what the apt step downloaded (of the total)."""


@dataclass(frozen=True)
class Memory:
    idle_mib: float
    idle_pids: int
    rendered_mib: float
    rendered_anon_mib: float
    rendered_pids: int
    render_ms: tuple[float, ...]
    png_sha256: tuple[str, ...]
    product: str


@dataclass(frozen=True)
class Variant:
    package: str
    cold: Build
    warm: Build
    size_bytes: int
    packages: int
    installed_kib: int
    memory: Memory


def chart_page(index: int, width: int) -> str:
    """A chart-like page (wheel, sectors, glyph labels, aspect lines) as a data: URL; `index`
    turns it, so every render differs."""
    centre, outer, inner = width / 2, width * 0.45, width * 0.3
    turn = index * 7
    parts = [f"<rect width='{width}' height='{width}' fill='#0b1026'/>"]
    parts.append(f"<circle cx='{centre}' cy='{centre}' r='{outer}' fill='none' stroke='gold'/>")
    parts.append(f"<circle cx='{centre}' cy='{centre}' r='{inner}' fill='none' stroke='gold'/>")
    for sector in range(12):
        angle = turn + sector * 30
        parts.append(
            f"<line x1='{centre}' y1='{centre - inner}' x2='{centre}' y2='{centre - outer}' "
            f"stroke='gold' transform='rotate({angle} {centre} {centre})'/>"
        )
        parts.append(
            f"<text x='{centre}' y='{centre - inner - 30}' fill='white' font-size='22' "
            f"font-family='Liberation Sans' text-anchor='middle' "
            f"transform='rotate({angle + 15} {centre} {centre})'>{sector + 1} ☉☽♀♂</text>"
        )
    for aspect in range(8):
        angle = turn + aspect * 47
        parts.append(
            f"<line x1='{centre}' y1='{centre - inner}' x2='{centre + inner * 0.8}' "
            f"y2='{centre + inner * 0.5}' stroke='#6cf' stroke-width='1.5' "
            f"transform='rotate({angle} {centre} {centre})'/>"
        )
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{width}'>"
        + "".join(parts)
        + "</svg>"
    )
    html = f"<!doctype html><meta charset='utf-8'><body style='margin:0'>{svg}<p>Chart {index}</p>"
    return "data:text/html;charset=utf-8," + urllib.parse.quote(html)


def _with_extra_package(dockerfile: Path, directory: Path) -> Path:
    """A copy of the Dockerfile (and its context filter) whose apt list has one more package.

    The apt step also gets an inert apt option unique to this run, so the layer cache of an
    earlier run's identical change cannot serve it: the step really re-runs, on warm mounts.
    """
    text = dockerfile.read_text()
    last_package = "fonts-noto-color-emoji \\\n"
    update = "&& apt-get update \\\n"
    edits = {
        last_package: f"{last_package}         {EXTRA_PACKAGE} \\\n",
        update: update.replace("update", f"update -o Nocturna::BenchRun={uuid.uuid4().hex}"),
    }
    for old, new in edits.items():
        if text.count(old) != 1:
            msg = f"{dockerfile}: cannot find the apt step's {old.strip()!r}"
            raise SystemExit(msg)
        text = text.replace(old, new)
    copy = directory / "Dockerfile"
    copy.write_text(text)
    shutil.copy(dockerfile.with_name("Dockerfile.dockerignore"), directory)
    return copy


def _build_figures(result: docker_host.BuildResult) -> Build:
    log = result.log
    vertex = next(
        number
        for number, name in re.findall(r"^#(\d+) (\[.+)$", log, re.MULTILINE)
        if APT_STEP in name
    )
    done = re.search(rf"^#{vertex} DONE ([\d.]+)s$", log, re.MULTILINE)
    if not done:
        msg = f"the apt step did not run (layer cache?):\n{log[-3000:]}"
        raise RuntimeError(msg)
    need = re.search(r"Need to get (.+?) of archives", log)
    return Build(
        seconds=result.seconds,
        apt_seconds=float(done.group(1)),
        downloaded=need.group(1) if need else "nothing",
    )


def _stats(container: str) -> tuple[float, float, int]:
    """Memory as `docker stats` shows it (usage less inactive file cache), the anonymous part
    of it (the processes' own memory, whoever paid for the shared file cache), and PIDs."""
    stats = engine("GET", f"/containers/{container}/stats?stream=false")
    memory = stats["memory_stats"]
    detail = memory["stats"]
    if "total_inactive_file" in detail:  # cgroup v1
        used, anon = memory["usage"] - detail["total_inactive_file"], detail["total_rss"]
    else:  # cgroup v2
        used, anon = memory["usage"] - detail["inactive_file"], detail["anon"]
    return used / 2**20, anon / 2**20, int(stats["pids_stats"]["current"])


def _run_options() -> list[str]:
    """The program's default container limits, on top of the hardened options."""
    limits = parse_settings({}, api_key="k", project_dir=None).limits
    return [
        *docker_host.HARDENED_RUN_OPTIONS,
        "--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m",
        "--memory-reservation", f"{limits.memory_reservation_mb}m",
        "--shm-size", f"{limits.shm_size_mb}m", "--cpus", limits.cpus,
        "--ulimit", f"nproc={limits.max_processes}:{limits.max_processes}",
    ]  # fmt: skip


def _memory(image: str, package: str, renders: int, width: int) -> Memory:
    """The second of two identical sessions: the first, in a container removed afterwards,
    reads the fresh image's browser files into the page cache and is charged for them, so the
    figure measured is the processes' memory, as on a host where the image has run before."""
    _session(image, package, renders, width)
    return _session(image, package, renders, width)


def _session(image: str, package: str, renders: int, width: int) -> Memory:
    name = f"imgbench-{package}-{uuid.uuid4().hex[:6]}"
    container = docker_host.run(
        image, _run_options(), env={"API_KEY": "bench", "DEPLOYMENT_SLOT": "blue"}, name=name
    )
    try:
        docker_host.wait_for_log(container, '"message":"listening"')
        time.sleep(SETTLE_SECONDS)
        idle_mib, _, idle_pids = _stats(container)
        pages = [chart_page(index, width) for index in range(renders)]
        argv = [docker_host.DOCKER, "exec", "-i", container, "node", "-e", RENDER_SCRIPT]
        with subprocess.Popen(
            [*argv, str(renders), str(width), *pages],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            if not line:
                msg = f"{package}: renders failed:\n{proc.stderr.read() if proc.stderr else ''}"
                raise RuntimeError(msg)
            time.sleep(SETTLE_SECONDS)
            rendered_mib, rendered_anon_mib, rendered_pids = _stats(container)
            proc.stdin.close()
            proc.wait(timeout=60)
        report = json.loads(line)
    finally:
        docker_host.docker("rm", "-f", container, check=False)
    results = report["results"]
    return Memory(
        idle_mib=idle_mib,
        idle_pids=idle_pids,
        rendered_mib=rendered_mib,
        rendered_anon_mib=rendered_anon_mib,
        rendered_pids=rendered_pids,
        render_ms=tuple(float(r["ms"]) for r in results),
        png_sha256=tuple(str(r["sha256"]) for r in results),
        product=str(report["product"]),
    )


def _packages(image: str) -> tuple[int, int]:
    sizes = docker_host.docker(
        "run", "--rm", "--label", docker_host.TEST_LABEL, "--entrypoint", "dpkg-query", image,
        "-W", "-f", "${Installed-Size}\\n",
    ).stdout.split()  # fmt: skip
    return len(sizes), sum(int(size) for size in sizes if size.isdigit())


def measure(package: str, context: Path, extra: Path, renders: int, width: int) -> Variant:
    args = docker_host.default_build_args(CHROMIUM_PACKAGE=package, VERSION="bench")
    tag = f"imgbench-{package}:{uuid.uuid4().hex[:8]}"
    built: list[docker_host.BuildResult] = []
    try:
        print(f"{package}: cold build (--no-cache) ...", file=sys.stderr, flush=True)
        cold = docker_host.build(context, args=args, tag=f"{tag}-cold", no_cache=True)
        built.append(cold)
        print(f"{package}: warm rebuild (+{EXTRA_PACKAGE}) ...", file=sys.stderr, flush=True)
        warm = docker_host.build(context, extra, args=args, tag=f"{tag}-warm")
        built.append(warm)
        print(f"{package}: {renders} renders ...", file=sys.stderr, flush=True)
        size = int(docker_host.inspect(cold.image_id)["Size"])
        count, installed_kib = _packages(cold.image_id)
        memory = _memory(cold.image_id, package, renders, width)
    finally:
        for result in built:
            docker_host.remove_image(result)
    return Variant(
        package=package,
        cold=_build_figures(cold),
        warm=_build_figures(warm),
        size_bytes=size,
        packages=count,
        installed_kib=installed_kib,
        memory=memory,
    )


def _change(full: float, shell: float) -> str:
    return f"{(shell - full) / full:+.0%}"


def table(full: Variant, shell: Variant) -> str:
    def build(b: Build) -> str:
        return f"{b.seconds:.1f} s (apt step {b.apt_seconds:.1f} s, downloaded {b.downloaded})"

    def memory(m: Memory) -> str:
        anon = f"{m.rendered_anon_mib:.0f} MiB anonymous"
        return f"{m.rendered_mib:.0f} MiB ({anon}), {m.rendered_pids} PIDs"

    fm, sm = full.memory, shell.memory
    same_png = sum(a == b for a, b in zip(fm.png_sha256, sm.png_sha256, strict=True))
    rows = [
        ("browser", fm.product, sm.product, ""),
        (
            "image size",
            f"{full.size_bytes / 1e6:,.0f} MB",
            f"{shell.size_bytes / 1e6:,.0f} MB",
            _change(full.size_bytes, shell.size_bytes),
        ),
        (
            "Debian packages (installed size)",
            f"{full.packages} ({full.installed_kib / 1024:,.0f} MiB)",
            f"{shell.packages} ({shell.installed_kib / 1024:,.0f} MiB)",
            f"{shell.packages - full.packages:+d}",
        ),
        (
            "cold build (`--no-cache`)",
            build(full.cold),
            build(shell.cold),
            _change(full.cold.seconds, shell.cold.seconds),
        ),
        (
            f"warm rebuild, apt list + `{EXTRA_PACKAGE}`",
            build(full.warm),
            build(shell.warm),
            _change(full.warm.seconds, shell.warm.seconds),
        ),
        (
            "memory, service alone",
            f"{fm.idle_mib:.0f} MiB, {fm.idle_pids} PIDs",
            f"{sm.idle_mib:.0f} MiB, {sm.idle_pids} PIDs",
            "",
        ),
        (
            f"memory after {len(fm.render_ms)} renders, browser open",
            memory(fm),
            memory(sm),
            f"ratio {sm.rendered_mib / fm.rendered_mib:.2f}",
        ),
        (
            "render, median (first)",
            f"{statistics.median(fm.render_ms):.0f} ms ({fm.render_ms[0]:.0f} ms)",
            f"{statistics.median(sm.render_ms):.0f} ms ({sm.render_ms[0]:.0f} ms)",
            _change(statistics.median(fm.render_ms), statistics.median(sm.render_ms)),
        ),
        ("PNG byte-identical", "", f"{same_png} of {len(fm.png_sha256)}", ""),
    ]
    lines = [f"| | `{FULL}` | `{SHELL}` | change |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=Path, default=docker_host.FIXTURE_SERVICE)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--width", type=int, default=800, help="page width and height, px")
    options = parser.parse_args()

    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "service"
        shutil.copytree(options.context, context, ignore=shutil.ignore_patterns("node_modules"))
        extra_dir = Path(tmp) / "extra"
        extra_dir.mkdir()
        extra = _with_extra_package(docker_host.DOCKERFILE, extra_dir)
        full = measure(FULL, context, extra, options.renders, options.width)
        shell = measure(SHELL, context, extra, options.renders, options.width)

    print(table(full, shell))
    shrink = 1 - shell.size_bytes / full.size_bytes
    verdict = "met" if shrink >= TARGET_SHRINK else "MISSED"
    print(f"\nimage {shrink:.1%} smaller (target at least {TARGET_SHRINK:.0%}): {verdict}")
    return 0 if shrink >= TARGET_SHRINK else 1


if __name__ == "__main__":
    sys.exit(main())
