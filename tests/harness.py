"""Run a Pulumi program function under the SDK's mocks and record what it registered.

Reference example, checked with pulumi==3.272.0, pulumi-docker==5.2.0,
pulumi-command==1.2.1, pytest 9 and Python 3.11. No Pulumi CLI, engine or provider
plugin is involved: the SDK talks to an in-process mock monitor instead.

`run()` relies on two private SDK functions, `run_pulumi_func` and `_sync_await`. They
are what `@pulumi.runtime.test` uses internally. Pin the pulumi version.

Usage::

    result = harness.run(my_program, {"activeSlot": "green"})
    result.mocks.resources["switch"].inputs        # inputs, camelCase keys
    result.monitor.requests["blue-container"]      # raw request: the resource options
    result.exports["liveContainer"]                # awaited pulumi.export() values
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import pulumi
from pulumi.runtime import mocks as pm
from pulumi.runtime import settings as ps
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

# Key of the wrapper the SDK puts around a secret value when it serialises inputs.
SECRET_SIG = "4dabf18193072939515e22adb298388d"

# Outputs a real provider would compute and the echoed inputs cannot supply.
# Leave a key out (pass computed_outputs={} to Recorder) to see it as Unknown in preview.
DEFAULT_COMPUTED: dict[str, dict[str, Any]] = {
    "docker:index/image:Image": {"repoDigest": "sha256:" + "ab" * 32},
    "command:local:Command": {"stdout": "", "stderr": ""},
    "command:remote:Command": {"stdout": "", "stderr": ""},
}


def is_secret(value: Any) -> bool:
    """True if a recorded input arrived wrapped as a secret."""
    return isinstance(value, dict) and SECRET_SIG in value


def unsecret(value: Any) -> Any:
    """Strip the secret wrappers from a recorded input, at any depth.

    One secret anywhere in a top-level input (one item of `envs`, one entry of an
    `environment` map) wraps the whole input, so tests usually need this.
    """
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unsecret(value["value"])
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


def as_engine_returns(value: Any) -> Any:
    """Stack outputs come back through protobuf Struct: every number is a float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, Mapping):
        return {key: as_engine_returns(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_engine_returns(item) for item in value]
    return value


def stack_reference_state(
    name: str, exports: Mapping[str, Any], secret_names: Iterable[str]
) -> dict[str, Any]:
    """Mocked state of a StackReference to a stack that exported `exports`, as the engine
    returns it (numbers as floats, secret outputs listed)."""
    outputs = as_engine_returns(dict(exports))
    return {
        "name": name,
        "outputs": outputs,
        "secretOutputNames": [key for key in secret_names if key in outputs],
    }


class Recorder(pulumi.runtime.Mocks):
    """Mocks that record every registration and invoke and echo inputs back as outputs.

    `resources` is keyed by logical name; the later registration wins if two resources
    of different types share a name (legal in Pulumi), so `registered` keeps them all.
    ComponentResources are recorded too, with `custom=False` and empty inputs.
    """

    def __init__(self, computed_outputs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.computed = DEFAULT_COMPUTED if computed_outputs is None else computed_outputs
        self.resources: dict[str, pm.MockResourceArgs] = {}
        self.registered: list[pm.MockResourceArgs] = []
        self.calls: list[pm.MockCallArgs] = []
        self.monitor: OptionCapturingMonitor | None = None
        """The monitor of the current run: the options of each request, by logical name."""

    def new_resource(self, args: pm.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append(args)
        self.resources[args.name] = args
        outputs = {**args.inputs, **self.computed.get(args.typ, {})}
        return f"{args.name}_id", outputs

    def call(self, args: pm.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        # A plain dict is accepted too; a tuple's second item must be a list, not None.
        self.calls.append(args)
        if args.token == "command:local:run":
            return {"stdout": "ok", "stderr": ""}, []
        return {}, []


class OptionCapturingMonitor(pm.MockMonitor):
    """Keeps the raw RegisterResourceRequest of every resource, keyed by logical name.

    `MockResourceArgs` carries no resource options (except provider), but the request
    does: `dependencies`, `ignoreChanges`, `replaceOnChanges`, `deleteBeforeReplace`,
    `customTimeouts`, `protect`, `parent`, `additionalSecretOutputs`, ...

    It also rejects duplicate URNs, which the real engine rejects and the stock mock
    monitor silently overwrites. RegisterResource runs on a thread pool, hence the lock.
    """

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}
        self._urns: set[str] = set()
        self._lock = threading.Lock()
        if isinstance(mocks, Recorder):
            mocks.monitor = self

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            with self._lock:
                if urn in self._urns:
                    msg = f"duplicate URN {urn}: two resources share a type and name"
                    raise ValueError(msg)
                self._urns.add(urn)
                self.requests[request.name] = request
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]  # untyped in SDK


class MockedRun(NamedTuple):
    mocks: Recorder
    monitor: OptionCapturingMonitor
    value: Any
    """Whatever the program function returned."""
    exports: dict[str, Any]
    """pulumi.export() values, awaited."""


def _full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def run(
    program: Callable[[], Any],
    config: Mapping[str, str] | None = None,
    *,
    preview: bool = False,
    project: str = "nocturna-infra",
    stack: str = "production",
    secret_keys: Iterable[str] = (),
    mocks: Recorder | None = None,
    organization: str | None = None,
) -> MockedRun:
    """Run `program()` once under fresh mocks and return what it registered.

    Config keys without a namespace get the project's (`activeSlot` becomes
    `example:activeSlot`). Values must be strings, as the engine sends them:
    `"true"`, `"3"`, `json.dumps({...})`. The first error raised by the program or by an
    Output callback is re-raised here, after all registrations have finished.
    """
    settings: dict[str, str] = {}
    for key, value in (config or {}).items():
        if not isinstance(value, str):
            msg = (
                f"config {key!r}: values must be strings, as the engine sends them; "
                f"got {value!r}. Use 'true'/'false', str(n) or json.dumps(...)."
            )
            raise TypeError(msg)
        settings[_full_key(project, key)] = value

    # Process-global state that set_mocks() leaves alone (see conftest.py).
    ps.ROOT.set(None)  # a fresh root Stack, so exports do not pile up
    ps.SETTINGS.outputs.clear()  # Output tasks left by an earlier failed run

    recorder = mocks if mocks is not None else Recorder()
    monitor = OptionCapturingMonitor(recorder)
    pm.set_mocks(
        recorder,
        project=project,
        stack=stack,
        preview=preview,
        monitor=monitor,
        organization=organization,
    )
    pulumi.runtime.set_all_config(settings, [_full_key(project, k) for k in secret_keys])

    result: dict[str, Any] = {}

    def body() -> None:
        result["value"] = program()

    # Waits for every registration and Output task, then re-raises the first error.
    _sync_await(run_pulumi_func(body))
    # pulumi.export() writes to the root Stack's `outputs` dict (values or Outputs).
    exported: dict[str, Any] = getattr(ps.get_root_resource(), "outputs", {})
    exports = {
        name: _sync_await(pulumi.Output.from_input(value).future())
        for name, value in exported.items()
    }
    return MockedRun(recorder, monitor, result.get("value"), exports)
