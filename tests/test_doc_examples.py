"""Every `python -m nocturna_infra.switch` and `python -m nocturna_infra.status` example in
README.md and docs/*.md, taken from the Markdown and run for real.

The examples name production paths and ports. `stand_ins` maps each of them to this test's
private host: a real Nginx running the shipped site configs (tests/nginx_instance.py), slot
containers on the local dockerd running the fixture backends of tests/backends.py (status
asks Docker about the slots, so they must be containers), a project directory holding the
repository's stack files with the same values replaced, all under a temporary prefix. An
example is run as written after that substitution (argv through shlex, a shell only for
`$(...)`), from the project directory, as the docs say to.

What a run must show is what the docs promise: a switch exits 0 and Nginx then serves its
`--slot`; status exits 0 ("as configured") and its `selection:` names the live slot. An
example this module cannot place (a new form, an edit that no longer parses) fails
`test_every_example_is_recognised`; `SKIPPED` and `NOT_COMMANDS` must match the docs exactly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import yaml

from nocturna_infra.program import render
from nocturna_infra.settings import Settings
from nocturna_infra.slot import Slot
from nocturna_infra.status.cli import load_settings
from tests import docker_host
from tests.nginx_instance import STAGING, NginxInstance
from tests.ports import distinct_free_ports

REPO: Final = Path(__file__).resolve().parent.parent
DOC_FILES: Final = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
TEST_KEY: Final = "doc-example-test-key"
APP_PORT: Final = 8080

# --- the one table: production values the docs name -> this test's private host ----------------

PORTS: Final = {
    3014: "blue",
    3012: "green",
    3013: "staging",
    8099: "verify",
    8098: "verify staging",
}
"""Documented ports (on 127.0.0.1); each becomes a free test port (`Host.ports`)."""
SLOT_PORTS: Final = {"blue": 3014, "green": 3012, "staging": 3013}
"""Each slot's documented port: Pulumi.yaml's default of `<slot>Port`."""
STACK_PATHS: Final = ("upstreamFile", "selectionDir", "verifyUrl")
"""Stack keys whose values go through `StandIns.paths`."""
PRODUCTION_RE: Final = re.compile(r"/etc/nginx|/var/lib/nocturna|127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class StandIns:
    """Every production value an example or a stack file names, and what stands in for it."""

    paths: Mapping[str, str]
    """Substrings of an argument or stack value (files, directories, 127.0.0.1:port)."""
    commands: Mapping[str, str]
    """Whole arguments (commands given to the switch, the interpreter)."""
    defaults: Mapping[str, str]
    """Switch flags whose defaults name the machine's own Nginx: added when an example leaves
    them out, so no example can touch it."""
    environment: Mapping[str, str]
    """`NAME=VALUE` prefixes."""
    files: Mapping[str, str]
    """Files an example reads from the project directory that the project does not ship."""
    service: str
    """`serviceName`, so the slot containers are this test's own."""


def stand_ins(host: Host) -> StandIns:
    nginx, staging = host.nginx, host.staging
    return StandIns(
        paths={
            "/etc/nginx/upstreams/nocturna-img-production.conf": str(nginx.upstream_file),
            "/etc/nginx/upstreams/nocturna-img-staging.conf": str(staging.upstream_file),
            "/var/lib/nocturna/switch": str(nginx.selection_dir),
            **{f"127.0.0.1:{port}": f"127.0.0.1:{host.ports[port]}" for port in PORTS},
        },
        commands={
            "nginx -t": nginx.test_command,
            "nginx -s reload": nginx.reload_command,
            "nginx": nginx.start_command,
            "venv/bin/python": sys.executable,
        },
        defaults={
            "--nginx-test": nginx.test_command,
            "--nginx-reload": nginx.reload_command,
            "--nginx-start": nginx.start_command,
            "--nginx-pid-file": str(nginx.pid_file),
        },
        environment={"API_KEY=...": f"API_KEY={TEST_KEY}"},
        files={"checks.json": production_checks_json()},
        service=host.service,
    )


def production_checks_json() -> str:
    """The smoke checks of Pulumi.production.yaml: what "the same check" by hand names."""
    stack = yaml.safe_load((REPO / "Pulumi.production.yaml").read_text())
    return json.dumps(stack["config"]["nocturna-infra:smokeChecks"])


SKIPPED: Final = {
    ("README.md", "venv/bin/python -m nocturna_infra.switch ..."): (
        "a pointer to the break-glass commands of docs/operations.md, flags elided; "
        "those run here in full"
    ),
}
"""Examples not run, with the reason; must match the docs exactly."""

NOT_COMMANDS: Final = frozenset(
    {"python -m nocturna_infra.switch", "python -m nocturna_infra.status"}
)
"""The commands' names in prose ("`python -m nocturna_infra.switch` moves traffic ...")."""

# --- extraction (pure) ------------------------------------------------------------------------

MENTION_RE: Final = re.compile(r"(?:\S+/)?python -m nocturna_infra\.(?:switch|status)\b")
SPAN_RE: Final = re.compile(r"`([^`]+)`")
FENCE_RE: Final = re.compile(r"^\s*```")
COMMENT_RE: Final = re.compile(r"\s+#(?:\s.*)?$")
OPTIONAL_RE: Final = re.compile(r"\s*\[(--[^\]]+)\]")
ELIDED: Final = "..."
"""Flags a doc left out (`...`, `...the flags above...`)."""


@dataclass(frozen=True)
class Example:
    file: str
    line: int
    text: str
    """The command as the reader sees it: continuation lines joined, a trailing comment
    dropped."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _unclosed(text: str) -> bool:
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


def extract_examples(file: str, markdown: str) -> list[Example]:
    """Commands in fenced blocks (with `\\` continuations and quotes spanning lines), code
    spans, and any other mention of the module, in document order."""
    lines = markdown.splitlines()
    examples: list[Example] = []
    in_block = False
    index = 0
    while index < len(lines):
        line = lines[index]
        start = index + 1
        if FENCE_RE.match(line):
            in_block = not in_block
        elif in_block and MENTION_RE.search(line):
            text = line.strip()
            while (text.endswith("\\") or _unclosed(text)) and index + 1 < len(lines):
                index += 1
                joiner = " " if text.endswith("\\") else "\n"
                text = text.removesuffix("\\").rstrip() + joiner + lines[index].strip()
            examples.append(Example(file, start, COMMENT_RE.sub("", text).strip()))
        elif not in_block:
            spans = SPAN_RE.findall(line)
            examples += [Example(file, start, s.strip()) for s in spans if MENTION_RE.search(s)]
            examples += [
                Example(file, start, m.group(0)) for m in MENTION_RE.finditer(SPAN_RE.sub("", line))
            ]
        index += 1
    return examples


def doc_examples() -> list[Example]:
    return [
        example
        for file in DOC_FILES
        for example in extract_examples(file, (REPO / file).read_text(encoding="utf-8"))
    ]


# --- what an example is (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One runnable form of an example."""

    env: tuple[str, ...]
    """Its `NAME=VALUE` prefixes."""
    interpreter: str
    module: str
    args: tuple[str, ...]
    """Arguments; `ELIDED` stands for flags the doc left out."""

    def flag(self, name: str) -> str | None:
        """The last value of a `--flag VALUE` (argparse keeps the last)."""
        values = [b for a, b in zip(self.args, self.args[1:], strict=False) if a == name]
        return values[-1] if values else None


def variants(text: str) -> list[str]:
    """`cmd [--stack staging]` is two commands: without and with the optional part."""
    match = OPTIONAL_RE.search(text)
    if match is None:
        return [text]
    return [OPTIONAL_RE.sub("", text, count=1), OPTIONAL_RE.sub(f" {match.group(1)}", text, 1)]


def parse_command(text: str) -> Command:
    """The command in an example; ValueError if it is not one this module can run."""
    words = shlex.split(text.replace("...the flags above...", ELIDED))
    env = []
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        env.append(words.pop(0))
    if len(words) < 3 or words[1] != "-m" or not words[2].startswith("nocturna_infra."):
        msg = f"not a `python -m nocturna_infra.<module>` command: {text!r}"
        raise ValueError(msg)
    module = words[2].removeprefix("nocturna_infra.")
    if module not in ("switch", "status"):
        msg = f"unknown module {words[2]!r} in {text!r}"
        raise ValueError(msg)
    return Command(tuple(env), words[0], module, tuple(words[3:]))


def fill_elided(command: Command, base: Command | None) -> Command:
    """`...` in a switch example stands for the flags of the file's break-glass command."""
    if ELIDED not in command.args:
        return command
    if base is None or ELIDED in base.args:
        msg = "flags elided, but the file has no complete switch example to take them from"
        raise ValueError(msg)
    at = command.args.index(ELIDED)
    args = (*command.args[:at], *base.args, *command.args[at + 1 :])
    return Command(command.env, command.interpreter, command.module, args)


def substitute(command: Command, subs: StandIns) -> list[str]:
    """argv for this host: the interpreter, environment, paths and Nginx commands replaced."""
    argv = [subs.commands[command.interpreter], "-m", f"nocturna_infra.{command.module}"]
    for arg in command.args:
        if arg in subs.commands:
            argv.append(subs.commands[arg])
            continue
        for doc, test in subs.paths.items():
            arg = arg.replace(doc, test)
        argv.append(arg)
    if command.module == "switch" and "--help" not in argv:
        for flag, value in subs.defaults.items():
            if flag not in argv:
                argv += [flag, value]
    test_ports = {value.rpartition(":")[2] for value in subs.paths.values()}
    for arg in argv:
        for match in PRODUCTION_RE.finditer(arg):
            if match.group(1) is None or match.group(1) not in test_ports:
                msg = f"{match.group(0)!r} in {arg!r} has no stand-in in stand_ins()"
                raise ValueError(msg)
    return argv


def environment(command: Command, subs: StandIns) -> dict[str, str]:
    """This environment, the example's `NAME=VALUE` prefixes, and the checkout on the path
    (the project directory here is a stand-in, not a checkout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for assignment in command.env:
        name, _, value = subs.environment[assignment].partition("=")
        env[name] = value
    return env


def shell_line(argv: Sequence[str]) -> str:
    """One shell line keeping `$(...)` for the shell; everything else quoted."""
    return " ".join(f'"{a}"' if "$(" in a else shlex.quote(a) for a in argv)


# --- the private host -------------------------------------------------------------------------


@dataclass
class Host:
    """Nginx (production and staging sites), three slot containers, a project directory."""

    root: Path
    ports: dict[int, int]
    service: str
    nginx: NginxInstance
    staging: NginxInstance
    containers: list[str]

    @property
    def project(self) -> Path:
        return self.root / "project"

    def write_stack(self, stack: str, active: str = "blue") -> Settings:
        """The repository's stack file with its production values replaced as `stand_ins`
        says (production: `activeSlot` set to `active`)."""
        data = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
        config = data["config"]
        declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
        subs = stand_ins(self)
        for key in STACK_PATHS:
            value = str(config.get(f"nocturna-infra:{key}", declared[key]["default"]))
            for doc, test in subs.paths.items():
                value = value.replace(doc, test)
            config[f"nocturna-infra:{key}"] = value
        for slot, doc_port in SLOT_PORTS.items():
            key = f"{slot}Port"
            assert declared[key]["default"] == doc_port, f"the docs' {key} is no longer {doc_port}"
            config[f"nocturna-infra:{key}"] = self.ports[doc_port]
        config["nocturna-infra:serviceName"] = subs.service
        if stack == "production":
            config["nocturna-infra:activeSlot"] = active
        (self.project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(data))
        return load_settings(self.project, stack)

    def route(self, stack: str, slot: str) -> None:
        """Traffic to `slot` as the router's command (render.switch_argv) leaves it."""
        settings = self.write_stack(stack, slot)
        instance = self.nginx if stack == "production" else self.staging
        ports = {s: settings.slot_ports[s] for s in settings.slots}
        argv = render.switch_argv(settings, Slot(slot), ports)
        argv[0] = sys.executable
        argv += ["--nginx-test", instance.test_command, "--nginx-reload", instance.reload_command]
        argv += ["--nginx-start", instance.start_command, "--attempts", "20", "--interval", "0.5"]
        argv += ["--nginx-pid-file", str(instance.pid_file)]
        done = run(argv, self.project, {**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout + done.stderr

    def slot_served(self) -> str:
        """Which slot the public server answers from (the backend's X-Slot header)."""
        return self.nginx.slot_served("/")


def run(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=180, check=False
    )


SLOT_SCRIPT: Final = """\
import sys, time
sys.path.insert(0, "/src")
from tests.backends import Backend
Backend(sys.argv[1], render_json=True, render_path="/api/v2/chart/render",
        expect_authorization="Bearer " + sys.argv[2]).start(int(sys.argv[3]), host="0.0.0.0")
time.sleep(10**9)
"""
HEALTH_SCRIPT: Final = (
    f"import urllib.request as u; u.urlopen('http://127.0.0.1:{APP_PORT}/health', timeout=3).read()"
)


def start_slot(name: str, slot: str, port: int) -> str:
    """A container running the fixture backend for `slot`, published on 127.0.0.1:`port`."""
    options = (
        "--init",
        "--volume",
        f"{REPO / 'tests'}:/src/tests:ro",
        "--health-cmd",
        f'python3 -c "{HEALTH_SCRIPT}"',
        "--health-interval",
        "1s",
        "--health-retries",
        "3",
        "--health-start-period",
        "1ms",
    )
    command = ["python3", "-c", SLOT_SCRIPT, slot, TEST_KEY, str(APP_PORT)]
    return docker_host.run(
        docker_host.BASE_IMAGE, options, publish=(port, APP_PORT), name=name, command=command
    )


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    root = Path(tempfile.mkdtemp(prefix="nocturna-doc-examples-"))
    os.chmod(root, 0o755)  # Nginx's workers (nobody) must search every parent of the selection
    ports = dict(zip(PORTS, distinct_free_ports(len(PORTS)), strict=True))
    nginx = NginxInstance(root / "nginx", ports[3014], ports[3012], verify_port=ports[8099])
    staging = NginxInstance(
        root / "nginx-staging", ports[3013], 0, verify_port=ports[8098], site=STAGING
    )
    made = Host(root, ports, f"nocturna-test-docs-{uuid.uuid4().hex[:10]}", nginx, staging, [])
    try:
        for instance in (nginx, staging):
            instance.prefix.mkdir()
            instance.write_config()
        made.project.mkdir()
        shutil.copy(REPO / "Pulumi.yaml", made.project)
        shutil.copytree(REPO / "smoke", made.project / "smoke")
        made.write_stack("production")
        for name, text in stand_ins(made).files.items():
            (made.project / name).write_text(text)
        for slot, doc_port in SLOT_PORTS.items():
            made.containers.append(start_slot(f"{made.service}-{slot}", slot, ports[doc_port]))
        for cid in made.containers:
            docker_host.wait_healthy(cid, timeout=60)
        made.route("staging", "staging")
        yield made
    finally:
        for instance in (nginx, staging):
            instance.stop()
        for cid in made.containers:
            docker_host.docker("rm", "-f", cid, check=False)
        shutil.rmtree(root)


# --- the tests --------------------------------------------------------------------------------

EXAMPLES: Final = doc_examples()
RUNNABLE: Final = [
    e for e in EXAMPLES if (e.file, e.text) not in SKIPPED and e.text not in NOT_COMMANDS
]


def base_command(example: Example) -> Command | None:
    """The file's break-glass command: its first complete switch example."""
    for other in RUNNABLE:
        if other.file != example.file:
            continue
        command = parse_command(other.text)
        if (
            command.module == "switch"
            and command.args
            and not {ELIDED, "--help"} & set(command.args)
        ):
            return command
    return None


def commands_of(example: Example) -> list[Command]:
    base = base_command(example)
    return [fill_elided(parse_command(text), base) for text in variants(example.text)]


def test_every_doc_with_examples_is_read() -> None:
    files = {e.file for e in RUNNABLE}
    assert files == {"README.md", "docs/hosts.md", "docs/operations.md", "docs/switch.md"}
    assert {parse_command(e.text).module for e in RUNNABLE} == {"switch", "status"}


def test_every_example_is_recognised() -> None:
    """A new or edited example this module cannot run fails here, naming where it is."""
    problems = []
    for example in RUNNABLE:
        try:
            commands = commands_of(example)
        except ValueError as error:
            problems.append(f"{example.where}: {error}")
            continue
        for command in commands:
            if command.interpreter != "venv/bin/python":
                problems.append(
                    f"{example.where}: runs {command.interpreter!r}, not the checkout's "
                    "venv/bin/python (what the router runs, routerPython; Debian and Ubuntu "
                    "have no `python` command)"
                )
            unknown = [e for e in command.env if e != "API_KEY=..."]
            if unknown:
                problems.append(f"{example.where}: unknown environment {unknown}")
            moves = command.module == "switch" and "--help" not in command.args
            if moves and command.flag("--slot") not in ("blue", "green"):
                problems.append(f"{example.where}: a switch without --slot blue|green")
    assert problems == []


def test_the_skip_list_matches_the_docs_exactly() -> None:
    found = {(e.file, e.text) for e in EXAMPLES}
    assert set(SKIPPED) <= found, "a skipped example is gone from the docs: drop it from SKIPPED"
    assert {e.text for e in EXAMPLES} >= NOT_COMMANDS


def test_extraction_joins_continuations_and_quotes_and_drops_comments() -> None:
    markdown = (
        "Run `venv/bin/python -m nocturna_infra.status --json` or see python -m "
        "nocturna_infra.switch.\n"
        "```sh\n"
        "API_KEY=... python -m nocturna_infra.switch --slot green \\\n"
        '  --smoke-checks \'[{"name": "a",\n'
        '    "path": "/"}]\'\n'
        "venv/bin/python -m nocturna_infra.status   # expect exit 0\n"
        "```\n"
    )
    assert extract_examples("x.md", markdown) == [
        Example("x.md", 1, "venv/bin/python -m nocturna_infra.status --json"),
        Example("x.md", 1, "python -m nocturna_infra.switch"),
        Example(
            "x.md",
            3,
            "API_KEY=... python -m nocturna_infra.switch --slot green "
            '--smoke-checks \'[{"name": "a",\n"path": "/"}]\'',
        ),
        Example("x.md", 6, "venv/bin/python -m nocturna_infra.status"),
    ]


def smoke_check_names(command: Command, project: Path) -> list[str]:
    """Names of the smoke checks an example gives (`$(cat FILE)`: FILE in the project)."""
    value = command.flag("--smoke-checks")
    if value is None:
        return []
    cat = re.fullmatch(r"\$\(cat (\S+)\)", value)
    text = (project / cat.group(1)).read_text() if cat else value
    return [check["name"] for check in json.loads(text)]


def assert_status_as_configured(
    done: subprocess.CompletedProcess[str], command: Command, live: str, server: str
) -> None:
    """Exit 0, and Nginx routes to `live`: per the files, the selection and the verification
    server's answer."""
    assert done.returncode == 0, done.stdout + done.stderr
    if "--json" in command.args:
        nginx = json.loads(done.stdout)["nginx"]
        assert nginx["routedSlots"] == [live], nginx
        assert (nginx["selection"], nginx["answeredFrom"]) == (live, server), nginx
        return
    nginx_line = done.stdout.splitlines()[1]
    assert f" routes to {live} ({server});" in nginx_line, done.stdout
    if live != "staging":
        assert f"; selection: {live};" in nginx_line, done.stdout
    assert nginx_line.endswith(f"; verification server answered from {server}"), done.stdout


@pytest.mark.docker
@pytest.mark.nginx
@pytest.mark.parametrize("example", RUNNABLE, ids=[e.where for e in RUNNABLE])
def test_example_does_what_the_docs_say(example: Example, host: Host) -> None:
    subs = stand_ins(host)
    for command in commands_of(example):
        argv = substitute(command, subs)
        env = environment(command, subs)
        if any("$(" in arg for arg in argv):
            argv = ["bash", "-c", shell_line(argv)]
        if command.module == "status":
            stack = command.flag("--stack") or "production"
            for live in ("blue", "green") if stack == "production" else ("staging",):
                host.route(stack, live)
                server = f"127.0.0.1:{host.ports[SLOT_PORTS[live]]}"
                assert_status_as_configured(run(argv, host.project, env), command, live, server)
        elif "--help" in command.args:
            done = run(argv, host.project, env)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("usage: python -m nocturna_infra.switch"), done.stdout
        else:
            target = command.flag("--slot")
            host.route("production", "green" if target == "blue" else "blue")
            assert host.slot_served() != target
            done = run(argv, host.project, env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.splitlines()[-1].startswith(f"switch: switched to {target} ")
            for name in smoke_check_names(command, host.project):
                assert f"smoke check {name!r} (POST " in done.stdout, done.stdout
            assert host.slot_served() == target


@pytest.mark.docker
@pytest.mark.nginx
def test_a_hand_run_smoke_check_reads_its_body_file_from_the_current_directory(
    host: Host, tmp_path: Path
) -> None:
    """docs/switch.md: a relative `bodyFile` is read from the current directory, which must be
    the project's; from anywhere else the switch refuses before any request."""
    example = next(e for e in RUNNABLE if e.file == "docs/switch.md" and "bodyFile" in e.text)
    (command,) = commands_of(example)
    subs = stand_ins(host)
    host.route("production", "blue")
    done = run(substitute(command, subs), tmp_path, environment(command, subs))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "switch: --smoke-checks[0].bodyFile: must name a readable UTF-8 file under "
        f"{tmp_path} (No such file or directory); got 'smoke/chart-render.json'\n"
    )
    assert host.slot_served() == "blue"
