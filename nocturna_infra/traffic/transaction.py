"""The file transaction of one switch, under the lock: plan what to write, write the upstream
file (only when servers change), `nginx -t`, reload, flip the selection, verify through Nginx;
on any failure or signal after the first write, put back exactly what was touched.

Also the pieces it needs around it: the lock, Nginx commands run without a shell, progress
lines, and the signal guard that keeps a restore from being cut short.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from nocturna_infra.traffic import reload, safe_files
from nocturna_infra.traffic.exits import ExitCode, Interrupted, SwitchError
from nocturna_infra.traffic.masking import mask
from nocturna_infra.traffic.options import SwitchOptions
from nocturna_infra.traffic.probe import Check, upstream_addresses, verify_routed
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import describe, marker, read_markers, write_markers
from nocturna_infra.traffic.split import Steps, render_splits, render_steps, steps_path
from nocturna_infra.traffic.upstream import (
    UpstreamParseError,
    group_name,
    parse_upstream_groups,
    render_upstreams,
    routing_text,
    slot_groups,
)

NGINX_COMMAND_TIMEOUT: Final = 60.0
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INTERRUPTS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalGuard:
    """Turns a signal into `Interrupted`, except while a restore runs: then it is only noted,
    so a second Ctrl-C or a dropped SSH session (SIGHUP) cannot abort putting things back.

    `committed` is set the moment a transaction's last step succeeded: a signal before it is
    answered by that transaction's restore, a signal after it by the orchestration, which
    reports that traffic moved (the record too) rather than "nothing changed"."""

    def __init__(self) -> None:
        self.restoring = False
        self.raised = False
        self.deferred: list[int] = []
        self.committed: Committed | None = None

    def handle(self, signum: int, _frame: object) -> None:
        # Only the first signal interrupts: later ones would land in the restore it starts.
        if self.restoring or self.raised:
            self.deferred.append(signum)
            return
        self.raised = True
        raise Interrupted(signum)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        previous, self.restoring = self.restoring, True
        try:
            yield
        finally:
            self.restoring = previous

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle) for sig in INTERRUPTS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Progress:
    """One stdout line per step, prefixed with the time since the switch started; `secrets`
    are masked in every line (a release may echo the key into what a step quotes)."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self.start = time.monotonic()
        self.secrets = tuple(secrets)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def step(self, message: str) -> None:
        print(f"[{self.elapsed:.2f}s] {mask(message, self.secrets)}", flush=True)


def backoff(attempt: int, ceiling: float, first: float = 0.1) -> float:
    """Delay after failed attempt `attempt` (1-based): doubling from `first`, capped."""
    return float(min(ceiling, first * 2 ** (attempt - 1)))


@contextmanager
def held_lock(path: Path, wait: float, owner: str) -> Iterator[None]:
    """Non-blocking exclusive flock on an owner-only file (the kernel drops it if we die)."""
    try:
        safe_files.check_directory(path.parent)
        fd = safe_files.open_lock(path)
    except UnsafeFileError as error:
        raise SwitchError(ExitCode.FILESYSTEM, f"lock file: {error}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    msg = f"another switch holds {path} ({holder or 'unknown'})"
                    raise SwitchError(ExitCode.LOCKED, msg) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (owner + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """All an Nginx command gets: PATH. Not the switch's own environment, which holds the
    API key (and, under Pulumi, everything `pulumi up` runs with)."""
    return {"PATH": environ.get("PATH") or DEFAULT_PATH}


def run_nginx(argv: Sequence[str]) -> str | None:
    """Run an Nginx command without a shell or our environment; None on success, else its
    last error line."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=NGINX_COMMAND_TIMEOUT,
            check=False,
            env=child_environment(os.environ),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    # nginx -t ends with "test failed"; the line saying why is the first [emerg] one.
    reasons = [line for line in lines if "[emerg]" in line] or lines[-1:] or ["no output"]
    return f"exit {done.returncode}: {reasons[0]}"


def nginx_down(verify: Check | None) -> bool:
    """Whether no Nginx runs: its loopback verification server refuses connections. Anything
    else (an answer, a timeout, no verification URL to ask) is not proof, so it is False."""
    if verify is None:
        return False
    parts = urlsplit(verify.url)
    try:
        socket.create_connection((parts.hostname, parts.port or 80), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def verify_through_nginx(opts: SwitchOptions, progress: Progress) -> str | None:
    """None once Nginx routes to a target server, else why not after bounded retries."""
    if opts.verify is None:
        progress.step("verify: skipped (no --verify-url)")
        return None
    detail = ""
    for attempt in range(1, opts.verify_attempts + 1):
        result = verify_routed(opts.verify, opts.timeout, opts.servers)
        progress.step(f"verify {opts.verify.url}: {result.detail}")
        if result.ok:
            if len(opts.servers) > 1 and result.upstream is not None:
                _see_every_server(opts, progress, {result.upstream})
            return None
        detail = result.detail
        if attempt < opts.verify_attempts:
            time.sleep(backoff(attempt, 0.5, first=0.05))
    return f"{opts.verify.url} {detail}"


def _see_every_server(opts: SwitchOptions, progress: Progress, seen: set[str]) -> None:
    """With a server per host: ask again until every one has answered through Nginx (its
    round robin), and say which did not. A note, not a failure: each was probed directly."""
    if opts.verify is None:
        return
    expected = {server: upstream_addresses([server]) for server in opts.servers}
    for attempt in range(1, 2 * opts.verify_attempts + 1):
        missing = [server for server, addresses in expected.items() if not addresses & seen]
        if not missing:
            progress.step(
                f"verify: every server answered through Nginx ({', '.join(opts.servers)})"
            )
            return
        # Spaced out: right after a reload, the old workers may still take new connections.
        time.sleep(backoff(attempt, 0.25, first=0.02))
        result = verify_routed(opts.verify, opts.timeout, opts.servers)
        if result.upstream is not None:
            seen.add(result.upstream)
    progress.step(
        f"verify: NOT SEEN answering through Nginx: {', '.join(missing)} (probed healthy "
        "directly; Nginx passes over a server that fails)"
    )


def _describe_groups(slot_servers: Mapping[str, Sequence[str]]) -> str:
    return ", ".join(f"{slot} -> {' '.join(servers)}" for slot, servers in slot_servers.items())


class _StepFailedError(Exception):
    """A step failed after the transaction began; the transaction restores, then reports."""

    def __init__(self, code: ExitCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Plan:
    """What one switch will write, decided under the lock before the first write."""

    old_file: bytes | None
    old_mode: int | None
    old_groups: dict[str, tuple[str, ...]]
    new_groups: dict[str, tuple[str, ...]]
    new_text: str
    old_markers: frozenset[str]
    old_steps: bytes | None = None
    """The canary steps file before (`split.steps_path`), None: absent."""
    new_steps: bytes | None = None
    """What it must hold: the steps with --canary-steps, else absent (the maps it names
    would be gone from the upstream file)."""

    @property
    def slots(self) -> list[str]:
        return list(self.new_groups)

    @property
    def servers_change(self) -> bool:
        return (
            self.old_file is None
            or routing_text(self.old_file.decode("utf-8", "replace")) != routing_text(self.new_text)
            or self.old_steps != self.new_steps
        )


def make_plan(opts: SwitchOptions, now: datetime) -> Plan:
    """Read the upstream file and the selection; refuse what cannot be switched safely."""
    safe_files.check_directory(opts.upstream_file.parent)
    # Searchable by the Nginx workers' group only (www-data on Debian; see docs/switch.md).
    safe_files.check_directory(opts.selection_dir, "install -d -o root -g www-data -m 0750")
    old = safe_files.read_file(opts.upstream_file)
    old_groups: dict[str, tuple[str, ...]] = {}
    if old is not None:
        try:
            old_groups = slot_groups(
                parse_upstream_groups(old[0].decode("utf-8", "replace")), opts.upstream_name
            )
        except UpstreamParseError:
            old_groups = {}  # e.g. the single-group file of a host being migrated
    merged = {**old_groups, **opts.standby, opts.slot: opts.servers}
    if opts.fallback_slot not in merged:
        msg = (
            f"--fallback-slot {opts.fallback_slot}: no servers known for it (the site config "
            f"proxies to {group_name(opts.upstream_name, opts.fallback_slot)} when no other slot "
            f"is selected); pass --standby {opts.fallback_slot}=HOST:PORT"
        )
        raise SwitchError(ExitCode.USAGE, msg)
    order = sorted(merged, key=lambda slot: (slot != opts.fallback_slot, slot))
    new_groups = {slot: merged[slot] for slot in order}
    for path in (opts.upstream_file, Path(f"{opts.upstream_file}.prev")):
        safe_files.remove_temps(path)
    for slot in new_groups:
        safe_files.remove_temps(marker(opts.selection_dir, opts.upstream_name, slot))
    new_text = render_upstreams(opts.upstream_name, new_groups, now, opts.keepalive)
    new_steps: bytes | None = None
    if opts.canary is not None:
        steps = Steps(opts.canary.shares, opts.canary.key)
        new_text += render_splits(opts.upstream_name, list(new_groups), steps)
        new_steps = render_steps(
            opts.upstream_name,
            list(new_groups),
            steps,
            opts.selection_dir,
            opts.canary.live_variable,
        ).encode()
    old_steps = safe_files.read_file(steps_path(opts.upstream_file))
    return Plan(
        old_file=old[0] if old else None,
        old_mode=old[1] if old else None,
        old_groups=old_groups,
        new_groups=new_groups,
        new_text=new_text,
        old_markers=read_markers(opts.selection_dir, opts.upstream_name, list(new_groups)),
        old_steps=old_steps[0] if old_steps else None,
        new_steps=new_steps,
    )


@dataclass(frozen=True)
class Committed:
    """A transaction that finished: Nginx routes to `slot`; `moved` if this one moved it."""

    slot: str
    plan: Plan
    moved: bool


class Transaction:
    """Writes in order and, on any failure or signal after the first write, puts back exactly
    what it touched. Flags are set *before* each write: a signal arriving mid-write must be
    answered with a restore, never with "nothing changed"."""

    def __init__(
        self,
        opts: SwitchOptions,
        plan: Plan,
        progress: Progress,
        guard: SignalGuard,
        after_select: Callable[[], None] | None = None,
    ) -> None:
        self.opts = opts
        self.plan = plan
        # The progressive switch's last canary step goes right after the flip, before the
        # verification (which must see only the new slot).
        self.after_select = after_select
        self.progress = progress
        self.guard = guard
        self.file_touched = False
        self.reload_started = False
        self.selection_touched = False

    @property
    def touched(self) -> bool:
        return self.file_touched or self.selection_touched

    def run(self) -> bool:
        """True if anything changed; raises SwitchError after restoring on failure."""
        try:
            changed = self._steps()
            # One assignment: a signal lands before it (restored below) or after it (traffic
            # moved; the caller says so), never in between.
            self.guard.committed = Committed(self.opts.slot, self.plan, changed)
            return changed
        except _StepFailedError as failed:
            self.guard.restoring = True  # from here on a signal cannot cut the restore short
            raise SwitchError(failed.code, failed.reason + self._restore()) from None
        except Interrupted as interrupted:
            committed = self.guard.committed
            if committed is not None and committed.plan is self.plan:
                raise  # after the commit: nothing to restore
            name = signal.Signals(interrupted.signum).name
            done = self._restore() if self.touched else "; nothing changed"
            raise SwitchError(128 + interrupted.signum, f"interrupted by {name}{done}") from None

    def _steps(self) -> bool:
        opts, plan, step = self.opts, self.plan, self.progress.step
        path = opts.upstream_file
        if plan.servers_change:
            self.file_touched = True
            try:
                if plan.old_file is not None:
                    safe_files.write_atomic(
                        Path(f"{path}.prev"), plan.old_file, safe_files.kept_mode(plan.old_mode)
                    )
                safe_files.write_atomic(
                    path, plan.new_text.encode(), safe_files.kept_mode(plan.old_mode)
                )
                if plan.new_steps != plan.old_steps:
                    safe_files.write_atomic(
                        steps_path(path), plan.new_steps, safe_files.kept_mode(plan.old_mode)
                    )
            except OSError as error:
                self.file_touched = self._file_differs()
                msg = f"cannot write {path}: {error.strerror}"
                raise _StepFailedError(ExitCode.FILESYSTEM, msg) from None
            was = _describe_groups(plan.old_groups) if plan.old_groups else "no slot groups"
            step(f"write {path}: {_describe_groups(plan.new_groups)} (was {was})")
            if plan.new_steps != plan.old_steps:
                what = "canary steps" if plan.new_steps else "removed (no canary steps)"
                step(f"write {steps_path(path)}: {what}")
            self._test_and_reload()
        else:
            step(f"{path}: servers unchanged; not rewritten, no reload")
        want = frozenset({opts.slot})
        before = describe(plan.old_markers, plan.slots, opts.fallback_slot)
        if plan.old_markers != want:
            self.selection_touched = True
            try:
                write_markers(opts.selection_dir, opts.upstream_name, plan.slots, want)
            except (OSError, UnsafeFileError) as error:
                self.selection_touched = self._selection_differs()
                reason = getattr(error, "strerror", None) or str(error)
                msg = f"cannot write the selection in {opts.selection_dir}: {reason}"
                raise _StepFailedError(ExitCode.FILESYSTEM, msg) from None
            step(f"select {opts.slot} in {opts.selection_dir} (was {before})")
        else:
            step(f"selection: already {before}")
        if self.after_select is not None:
            self.after_select()
        problem = verify_through_nginx(opts, self.progress)
        if problem is None:
            return self.touched
        if not self.file_touched:
            # The upstream file is as wanted but Nginx may not have loaded it (an earlier
            # switch was killed between its write and its reload): test and reload it as it
            # is, once, before giving up.
            step(f"{path}: reloading it as it is, in case Nginx never loaded it")
            self._test_and_reload()
            problem = verify_through_nginx(opts, self.progress)
            if problem is None:
                return True
        raise _StepFailedError(
            ExitCode.VERIFY_FAILED, f"verification through Nginx failed ({problem})"
        )

    def _file_differs(self) -> bool:
        """After a failed write: did the upstream file change anyway (it is atomic, so
        normally not)? Unknown counts as changed, so it is restored."""
        try:
            now = safe_files.read_file(self.opts.upstream_file)
        except UnsafeFileError:
            return True
        return (now[0] if now else None) != self.plan.old_file

    def _selection_differs(self) -> bool:
        opts = self.opts
        try:
            now = read_markers(opts.selection_dir, opts.upstream_name, self.plan.slots)
        except UnsafeFileError:
            return True
        return now != self.plan.old_markers

    def _test_and_reload(self) -> None:
        problem = run_nginx(self.opts.nginx_test)
        self.progress.step(f"nginx test: {problem or 'ok'}")
        if problem is not None:
            raise _StepFailedError(
                ExitCode.CONFIG_REJECTED, f"nginx -t rejected the new file ({problem})"
            )
        master = reload.master_pid(self.opts.nginx_pid_file) if self.opts.nginx_pid_file else None
        before = set(reload.workers(master)) if master is not None else set()
        self.reload_started = True
        problem = run_nginx(self.opts.nginx_reload)
        self.progress.step(f"nginx reload: {problem or 'ok'}")
        if problem is not None and nginx_down(self.opts.verify):
            problem = self._start_nginx(problem)
            if problem is None:
                return  # a fresh start: no worker from before, nothing to wait for
        if problem is not None:
            raise _StepFailedError(ExitCode.RELOAD_FAILED, f"reload failed ({problem})")
        self._wait_for_workers(master, before)

    def _wait_for_workers(self, master: int | None, before: set[int]) -> None:
        """Flip only once no worker from before the reload can start a request (reload.py)."""
        if master is None:
            where = self.opts.nginx_pid_file or "no --nginx-pid-file"
            self.progress.step(
                f"nginx workers: not seen ({where}); flipping without waiting for old workers"
            )
            return
        waited = reload.wait_for_workers(master, before, self.opts.reload_timeout, settle=2.0)
        self.progress.step(f"nginx reload: {waited.describe()}")
        if not waited.ok:
            raise _StepFailedError(
                ExitCode.RELOAD_FAILED,
                f"reload did not take effect in every worker within "
                f"{self.opts.reload_timeout:g}s ({waited.describe()})",
            )

    def _start_nginx(self, reload_problem: str) -> str | None:
        """A fresh host: Nginx could not run before the file it includes existed. Now that the
        file is written and tested, start it; None once it runs, else why not."""
        if self.opts.nginx_start is None:
            return (
                f"{reload_problem}; Nginx is not running and --nginx-start is empty: start it "
                "(the upstream file now exists) or give --nginx-start"
            )
        self.progress.step("nginx reload: Nginx is not running: starting it")
        problem = run_nginx(self.opts.nginx_start)
        self.progress.step(f"nginx start: {problem or 'ok'}")
        return None if problem is None else f"Nginx is not running and did not start ({problem})"

    def _restore(self) -> str:
        """Put back what was touched, with signals deferred; returns the tail of the reason."""
        opts, plan, step = self.opts, self.plan, self.progress.step
        done: list[str] = []
        failed: list[str] = []
        with self.guard.shielded():
            if self.selection_touched:
                try:
                    write_markers(
                        opts.selection_dir, opts.upstream_name, plan.slots, plan.old_markers
                    )
                    before = describe(plan.old_markers, plan.slots, opts.fallback_slot)
                    step(f"restore selection: {before}")
                    done.append("previous selection restored")
                except (OSError, UnsafeFileError) as error:
                    step(f"restore selection: FAILED ({error})")
                    failed.append(f"RESTORE FAILED ({error}): fix {opts.selection_dir} by hand")
            if self.file_touched:
                try:
                    safe_files.write_atomic(
                        opts.upstream_file, plan.old_file, safe_files.kept_mode(plan.old_mode)
                    )
                    if plan.new_steps != plan.old_steps:
                        safe_files.write_atomic(
                            steps_path(opts.upstream_file),
                            plan.old_steps,
                            safe_files.kept_mode(plan.old_mode),
                        )
                    restored = "previous file" if plan.old_file else "absent again"
                    step(f"restore {opts.upstream_file}: {restored}")
                    done.append("previous file restored")
                except (OSError, UnsafeFileError) as error:
                    step(f"restore {opts.upstream_file}: FAILED ({error})")
                    failed.append(f"RESTORE FAILED ({error}): fix {opts.upstream_file} by hand")
            if self.reload_started and self.file_touched:
                error_line = run_nginx(opts.nginx_reload)
                step(f"reload with previous file: {error_line or 'ok'}")
                if error_line:
                    failed.append(f"reload with the previous file also failed ({error_line})")
                else:
                    done.append("reloaded")
        text = " and ".join(done) if done else "nothing changed"
        return "; " + "; ".join([text, *failed])
