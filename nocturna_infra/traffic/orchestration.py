"""The order of one switch: probe the target directly, run the smoke checks, take the lock
and run the transaction (flip, verify), then watch the new slot with no lock held and switch
back, health-gated, if it fails. Each step lives elsewhere; this module only sequences them
and decides what each outcome means for the exit code and the watch record.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nocturna_infra.traffic import baseline, gates, progressive, safe_files
from nocturna_infra.traffic.exits import ExitCode, Interrupted, SwitchError
from nocturna_infra.traffic.masking import mask
from nocturna_infra.traffic.options import SwitchOptions
from nocturna_infra.traffic.probe import Check, CheckResult, run_check
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import nginx_choice, read_markers
from nocturna_infra.traffic.transaction import (
    Committed,
    Plan,
    Progress,
    SignalGuard,
    Transaction,
    backoff,
    held_lock,
    make_plan,
)
from nocturna_infra.traffic.upstream import group_name
from nocturna_infra.traffic.watch import LogTail, Outcome, Watch, WatchLogs

# --- the flow -------------------------------------------------------------------------------


def run(
    opts: SwitchOptions, now: Callable[[], datetime], progress: Progress, guard: SignalGuard
) -> str:
    """The whole switch after validation, in order; returns the summary line. Raises
    SwitchError (or Interrupted before anything changed) with the exit code."""
    targets = ", ".join(opts.servers)
    progress.step(f"switch {opts.upstream_name} to {opts.slot} ({targets})")
    probe_target(opts, progress)
    smoke_gate(opts, progress)
    tail = open_watch_log(opts, progress)
    started = time.time()
    try:
        after_select = None
        if opts.canary is not None and tail is not None:
            progressive.run_steps(opts, now, progress, guard, tail)
            after_select = progressive.clear_step(opts)
            started = time.time()
        plan, changed = switch_locked(opts, now, progress, guard, after_select)
        if opts.canary is not None:
            progressive.finish(opts, progress)
        summary = (
            f"{'switched to' if changed else 'already live:'} {opts.slot} -> {targets} "
            f"({opts.upstream_name}) in {progress.elapsed:.2f}s"
        )
        return after_switch(opts, plan, changed, summary, tail, started, now, progress, guard)
    except Interrupted as interrupted:
        if guard.committed is None:
            raise  # before the first write: main says nothing changed
        raise interrupted_after_commit(
            opts, guard.committed, interrupted.signum, started, progress, guard
        ) from None
    finally:
        if tail is not None:
            tail.close()


# --- before the lock: the target must prove itself ------------------------------------------


def _label(check: Check) -> str:
    return f"{check.method} {check.url}" if check.method != "GET" else check.url


def _first_failure(
    checks: Sequence[Check], timeout: float, progress: Progress
) -> tuple[Check, CheckResult] | None:
    for check in checks:
        result = run_check(check, timeout)
        progress.step(f"probe {_label(check)}: {result.detail}")
        if not result.ok:
            return check, result
    return None


def probe_target(opts: SwitchOptions, progress: Progress) -> None:
    """Every health URL and the smoke check must pass in one attempt; bounded retries."""
    checks = (*opts.health, *opts.smoke)
    attempt = 0
    while True:
        attempt += 1
        failed = _first_failure(checks, opts.timeout, progress)
        if failed is None:
            return
        if attempt >= opts.attempts:
            break
        time.sleep(backoff(attempt, opts.interval))
    check, result = failed
    reason = (
        f"{opts.slot} not healthy after {progress.elapsed:.1f}s ({_label(check)} {result.detail})"
    )
    raise SwitchError(ExitCode.UNHEALTHY, reason)


def smoke_gate(opts: SwitchOptions, progress: Progress) -> None:
    """Every smoke check, against every target server directly; exit 3 on the first failure."""
    if not opts.smoke_checks:
        return
    host = opts.health[0].host_header if opts.health else None
    failure = gates.smoke_failure(
        opts.smoke_checks, opts.servers, opts.environ, host, progress.step
    )
    if failure is not None:
        raise SwitchError(ExitCode.UNHEALTHY, f"{opts.slot} failed {failure}; nothing changed")


def open_watch_log(opts: SwitchOptions, progress: Progress) -> WatchLogs | None:
    """With a watch: follow the access log (and the request-start log) from where they end
    now (every request of the new slot comes after this point); unreadable is refused
    before anything changes."""
    if opts.watch is None:
        return None
    logs = [(opts.watch.log, "--watch-log")]
    if opts.watch.started_log is not None:
        logs.append((opts.watch.started_log, "--watch-started-log"))
    tails: list[LogTail] = []
    for path, flag in logs:
        tail = LogTail(path)
        try:
            tail.start()
        except OSError as error:
            for opened in tails:
                opened.close()
            msg = f"{flag} {path}: unreadable ({error.strerror}); nothing changed"
            raise SwitchError(ExitCode.FILESYSTEM, msg) from None
        if not path.exists():
            progress.step(f"watch log {path}: not there yet (read once Nginx writes it)")
        tails.append(tail)
    return WatchLogs(tails[0], tails[1] if len(tails) > 1 else None)


# --- under the lock: the transaction ------------------------------------------------------


def switch_locked(
    opts: SwitchOptions,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
    after_select: Callable[[], None] | None = None,
) -> tuple[Plan, bool]:
    """Take the lock, plan, and run the transaction; the lock is released on return."""
    owner = (
        f"pid {os.getpid()} switching to {opts.slot} since {now().isoformat(timespec='seconds')}"
    )
    with held_lock(opts.lock_file, opts.lock_wait, owner):
        progress.step(f"lock {opts.lock_file}: held")
        try:
            plan = make_plan(opts, now())
        except UnsafeFileError as error:
            raise SwitchError(ExitCode.FILESYSTEM, f"{error}; nothing changed") from None
        return plan, Transaction(opts, plan, progress, guard, after_select).run()


def previous_slot(opts: SwitchOptions, plan: Plan) -> str | None:
    """The slot Nginx used before this switch, if it had servers and was another slot."""
    if plan.old_file is None:
        return None
    before = nginx_choice(plan.old_markers, plan.slots, opts.fallback_slot)
    if before == opts.slot or before not in plan.old_groups:
        return None
    return before


def selected_slot(
    selection_dir: Path, upstream_name: str, slots: Sequence[str], fallback: str
) -> str:
    """The slot Nginx proxies to per the selection files (for status and the program)."""
    return nginx_choice(read_markers(selection_dir, upstream_name, slots), slots, fallback)


def _selected_now(opts: SwitchOptions, plan: Plan) -> str | None:
    try:
        return selected_slot(opts.selection_dir, opts.upstream_name, plan.slots, opts.fallback_slot)
    except UnsafeFileError:
        return None


# --- after the flip: the watch, and the switch back if it fails -----------------------------


def after_switch(
    opts: SwitchOptions,
    plan: Plan,
    changed: bool,
    summary: str,
    tail: WatchLogs | None,
    started: float,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> str:
    """What follows a committed transaction: the watch, when one is asked for and traffic
    moved from a slot it could go back to; returns the final summary line."""
    if tail is None or opts.watch is None:
        return summary
    previous = previous_slot(opts, plan)
    if not changed or previous is None:
        why = "nothing changed" if not changed else "no previous slot to switch back to"
        progress.step(f"watch: skipped ({why})")
        return summary
    progress.step(f"switch: {summary}")
    watch_or_switch_back(opts, plan, previous, tail, started, now, progress, guard)
    return f"{summary}; {opts.slot} passed the {opts.watch.seconds:g}s watch"


def watch_or_switch_back(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    tail: WatchLogs,
    started: float,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> None:
    """Watch the new slot with no lock held; switch back if it fails. Raises SwitchError with
    exit 9 (switched back) or 10 (still live); the record says what happened either way."""
    assert opts.watch is not None and opts.verify is not None
    path = gates.record_path(opts.upstream_file)
    record = gates.new_record(opts.slot, previous, opts.watch, started)
    limits = opts.watch.thresholds
    watch = Watch(
        group_name(opts.upstream_name, opts.slot), started, limits.rules, limits.request_timeout
    )
    probe = gates.nginx_probe(opts.verify, opts.servers, opts.timeout, opts.watch.probe_path)

    def still_selected() -> bool:
        return _selected_now(opts, plan) == opts.slot

    try:
        _save_record(path, record, progress)  # inside: a signal after it closes the record
        before = gates.previous_traffic(
            opts.watch, group_name(opts.upstream_name, previous), started
        )
        outcome = gates.run_watch(watch, opts.watch, tail, probe, still_selected, progress.step)
        outcome, rows = gates.judge_against_previous(
            outcome, before, opts.watch, (previous, opts.slot), progress.step
        )
        record["comparison"] = baseline.rows_json(rows)
        _judge(opts, plan, previous, path, record, watch, outcome, now, progress, guard)
    except Interrupted as interrupted:  # during the watch or before the switch back's writes
        name = signal.Signals(interrupted.signum).name
        _save_record(path, {**record, **gates.ended("interrupted", f"by {name}", watch)}, progress)
        live = guard.committed.slot if guard.committed else opts.slot  # back, if it got there
        raise SwitchError(
            128 + interrupted.signum,
            f"interrupted by {name} during the watch; {live} stays live (saw {watch.summary()})",
        ) from None


def interrupted_after_commit(
    opts: SwitchOptions,
    committed: Committed,
    signum: int,
    started: float,
    progress: Progress,
    guard: SignalGuard,
) -> SwitchError:
    """A signal after the flip and before the watch took over: traffic did move, so say so,
    and close the watch record as interrupted (a stale one must not speak for this switch)."""
    name = signal.Signals(signum).name
    if not committed.moved:
        return SwitchError(
            128 + signum, f"interrupted by {name}; nothing changed ({committed.slot} was live)"
        )
    previous = previous_slot(opts, committed.plan)
    back = f" (switch to {previous} to go back)" if previous else ""
    if opts.watch is None:
        reason = f"interrupted by {name} after the switch; traffic moved to {committed.slot}"
        return SwitchError(128 + signum, reason + back)
    if previous is not None:
        watch = Watch(group_name(opts.upstream_name, opts.slot), started)
        record = gates.new_record(opts.slot, previous, opts.watch, started)
        ended = gates.ended("interrupted", f"by {name} after the switch, before the watch", watch)
        with guard.shielded():
            _save_record(gates.record_path(opts.upstream_file), {**record, **ended}, progress)
    reason = (
        f"interrupted by {name} after the switch; traffic moved to {committed.slot}, "
        "the watch did not run"
    )
    return SwitchError(128 + signum, reason + back)


def _judge(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    path: Path,
    record: Mapping[str, object],
    watch: Watch,
    outcome: Outcome,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> None:
    """Act on the watch's outcome: keep the new slot, or switch back and say so."""
    assert opts.watch is not None
    if outcome.result != "failed":
        _save_record(
            path, {**record, **gates.ended(outcome.result, outcome.reason, watch)}, progress
        )
        return
    seen = f"saw {watch.summary()}"
    try:
        back = switch_back(opts, plan, previous, now, progress, guard)
    except SwitchError as failure:
        ended = gates.ended("switch-back-failed", f"{outcome.reason}; {failure.reason}", watch)
        _save_record(path, {**record, **ended}, progress)
        raise SwitchError(
            ExitCode.WATCH_STILL_LIVE,
            f"watch: {opts.slot} failed ({outcome.reason}) but switching back to {previous} "
            f"failed: {failure.reason}; {opts.slot} is still live. {seen}",
        ) from None
    if back is None:
        reason = f"{outcome.reason}; someone switched meanwhile, so nothing was switched back"
        _save_record(path, {**record, **gates.ended("superseded", reason, watch)}, progress)
        progress.step(f"watch: {reason}")
        return
    ended = gates.ended("switched-back", outcome.reason, watch, switched_back_at=time.time())
    _save_record(path, {**record, **ended}, progress)
    raise SwitchError(
        ExitCode.WATCH_SWITCHED_BACK,
        f"watch: {opts.slot} failed within {opts.watch.seconds:g}s ({outcome.reason}); "
        f"switched back to {previous} ({back}). {seen}. Fix the release, or run "
        f"`pulumi config set activeSlot {previous}`.",
    )


def _save_record(path: Path, record: Mapping[str, object], progress: Progress) -> None:
    """Owner-only and masked: the record quotes what the release answered, which may hold
    the key, and `status --json` passes it on."""
    text = mask(json.dumps(record, indent=2), progress.secrets) + "\n"
    try:
        safe_files.write_atomic(path, text.encode(), safe_files.RECORD_MODE)
    except (OSError, UnsafeFileError) as error:
        progress.step(f"watch record {path}: not written ({error})")


def switch_back(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> str | None:
    """Switch to `previous` through the same health-gated path, under the lock, only if the
    selection still names the watched slot. Returns how it went, or None if superseded."""
    servers = plan.new_groups[previous]
    template = urlsplit(opts.health[0].url)
    health = tuple(
        replace(opts.health[0], url=urlunsplit(template._replace(netloc=server)))
        for server in servers
    )
    standby = {slot: found for slot, found in plan.new_groups.items() if slot != previous}
    back = replace(
        opts,
        slot=previous,
        servers=servers,
        standby=standby,
        health=health,
        smoke=(),
        smoke_checks=(),
        watch=None,
        lock_wait=max(opts.lock_wait, 30.0),
    )
    progress.step(f"switch back to {previous} ({', '.join(servers)})")
    probe_target(back, progress)
    since = now().isoformat(timespec="seconds")
    owner = f"pid {os.getpid()} switching back to {previous} since {since}"
    with held_lock(back.lock_file, back.lock_wait, owner):
        progress.step(f"lock {back.lock_file}: held")
        if _selected_now(opts, plan) != opts.slot:
            return None
        try:
            back_plan = make_plan(back, now())
        except UnsafeFileError as error:
            raise SwitchError(ExitCode.FILESYSTEM, f"{error}; nothing changed") from None
        Transaction(back, back_plan, progress, guard).run()
    return f"in {progress.elapsed:.2f}s since the switch began"
