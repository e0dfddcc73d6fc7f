"""The progressive switch's flow (--canary-steps): make Nginx know the new slot's group and
the step maps while the old slot stays selected (one `nginx -t` and reload, only when they
change), then step through the shares, each judged by `canary`, and hand back to the
ordinary flip. A regression or a signal removes the step marker first: 0 %, the old slot
takes everything, exit 11 (or 128+N).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from nocturna_infra.traffic import gates, safe_files
from nocturna_infra.traffic.canary import (
    CanaryOptions,
    StepJudge,
    longest,
    record_path,
    run_step,
    step_table,
)
from nocturna_infra.traffic.exits import ExitCode, Interrupted, SwitchError
from nocturna_infra.traffic.masking import mask
from nocturna_infra.traffic.options import SwitchOptions
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import nginx_choice
from nocturna_infra.traffic.split import write_step
from nocturna_infra.traffic.transaction import (
    Progress,
    SignalGuard,
    Transaction,
    held_lock,
    make_plan,
)
from nocturna_infra.traffic.upstream import group_name
from nocturna_infra.traffic.watch import Watch, WatchLogs


def clear_step(opts: SwitchOptions) -> Callable[[], None]:
    """Removes every step marker towards the target (0 %, or the flip alone decides)."""
    assert opts.canary is not None
    shares = opts.canary.shares

    def clear() -> None:
        write_step(opts.selection_dir, opts.upstream_name, opts.slot, shares, None)

    return clear


def run_steps(
    opts: SwitchOptions,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
    logs: WatchLogs,
) -> None:
    """Prepare, then every step; returns when the last step passed (or there is nothing to
    step from). Raises SwitchError 11 on a regression, 128+N on a signal, at 0 %."""
    canary, watch = opts.canary, opts.watch
    assert canary is not None and watch is not None
    previous = _prepare(opts, now, progress, guard)
    if previous is None:
        return
    progress.step(
        f"canary: {opts.slot} at {', '.join(f'{s} %' for s in canary.shares)} of requests, "
        f"each judged against {previous}; at most {longest(canary):g}s before the full flip"
    )
    path = record_path(opts.upstream_file)
    record: dict[str, Any] = {
        "slot": opts.slot,
        "previous": previous,
        "shares": list(canary.shares),
        "started": gates.iso(time.time()),
        "result": "stepping",
        "share": 0,
        "stepStarted": None,
        "reason": "",
        "steps": [],
    }
    limits, factor = watch.thresholds, watch.regression_factor
    for index, share in enumerate(canary.shares, start=1):
        judge = StepJudge(
            share,
            Watch(group_name(opts.upstream_name, previous), time.time(), limits.rules),
            Watch(group_name(opts.upstream_name, opts.slot), time.time(), limits.rules),
        )
        try:
            write_step(opts.selection_dir, opts.upstream_name, opts.slot, canary.shares, share)
            record.update(share=share, stepStarted=gates.iso(judge.started))
            _save(path, record, progress)
            progress.step(
                f"canary step {index}/{len(canary.shares)}: {opts.slot} {share} % "
                f"(at most {canary.step_seconds:g}s)"
            )
            outcome = run_step(judge, canary, limits, factor, logs, progress.step)
        except (Interrupted, OSError, UnsafeFileError) as stopped:
            _back_to_zero(opts, guard, progress)
            name = (
                signal.Signals(stopped.signum).name
                if isinstance(stopped, Interrupted)
                else str(stopped)
            )
            record.update(result="interrupted", reason=f"at {share} %: {name}", share=0)
            _save(path, record, progress)
            code = 128 + stopped.signum if isinstance(stopped, Interrupted) else ExitCode.FILESYSTEM
            reason = f"canary stopped at {share} % ({name}); back to 0 %: {previous} takes all"
            raise SwitchError(code, reason) from None
        progress.step(
            f"canary step {share} %: {outcome.result} ({outcome.reason}); by route class, "
            f"{previous} against {opts.slot} on the same minutes:\n"
            + step_table(outcome, (previous, opts.slot))
        )
        record["steps"].append(judge.to_json(outcome.result, outcome.reason))
        if outcome.result == "regressed":
            _back_to_zero(opts, guard, progress)
            record.update(result="aborted", reason=f"at {share} %: {outcome.reason}", share=0)
            _save(path, record, progress)
            raise SwitchError(
                ExitCode.CANARY_ABORTED,
                f"canary: {opts.slot} regressed at step {index} ({share} %): {outcome.reason}; "
                f"back to 0 %, {previous} takes everything. Fix the release, or run "
                f"`pulumi config set activeSlot {previous}`.",
            )
    record.update(result="flipping", reason="every step passed")
    _save(path, record, progress)


def finish(opts: SwitchOptions, progress: Progress) -> None:
    """After the flip: the record says the canary ended at 100 %."""
    path = record_path(opts.upstream_file)
    record = _load(path)
    if record is not None and record.get("result") == "flipping":
        record.update(result="passed", share=100, ended=gates.iso(time.time()))
        _save(path, record, progress)


def _prepare(
    opts: SwitchOptions, now: Callable[[], datetime], progress: Progress, guard: SignalGuard
) -> str | None:
    """Under the lock: the slot to step from, after writing the new slot's group and the
    maps with that slot still selected; None when there is nothing to step from."""
    assert opts.canary is not None
    owner = f"pid {os.getpid()} preparing canary steps to {opts.slot}"
    with held_lock(opts.lock_file, opts.lock_wait, owner):
        try:
            plan = make_plan(opts, now())
        except UnsafeFileError as error:
            raise SwitchError(ExitCode.FILESYSTEM, f"{error}; nothing changed") from None
        try:
            for slot in plan.slots:  # a step left by a killed switch must not linger
                write_step(opts.selection_dir, opts.upstream_name, slot, opts.canary.shares, None)
        except (OSError, UnsafeFileError) as error:
            msg = f"cannot clear canary steps in {opts.selection_dir}: {error}"
            raise SwitchError(ExitCode.FILESYSTEM, msg) from None
        live = nginx_choice(plan.old_markers, plan.slots, opts.fallback_slot)
        if live == opts.slot or live not in plan.old_groups or not plan.old_markers:
            progress.step(f"canary: skipped ({live} is live; nothing to step from)")
            return None
        stay = replace(
            opts,
            slot=live,
            servers=plan.old_groups[live],
            standby={**opts.standby, opts.slot: opts.servers},
        )
        progress.step(f"canary: {live} stays selected while Nginx learns {opts.slot}'s steps")
        Transaction(stay, make_plan(stay, now()), progress, guard).run()
        guard.committed = None  # traffic did not move: a signal now means "nothing moved"
        return live


def _back_to_zero(opts: SwitchOptions, guard: SignalGuard, progress: Progress) -> None:
    with guard.shielded():
        try:
            clear_step(opts)()
            progress.step(f"canary: back to 0 % ({opts.slot} step marker removed)")
        except (OSError, UnsafeFileError) as error:
            progress.step(f"canary: step marker NOT removed ({error}); remove it by hand")


def _save(path: Path, record: dict[str, Any], progress: Progress) -> None:
    text = mask(json.dumps(record, indent=2), progress.secrets) + "\n"
    try:
        safe_files.write_atomic(path, text.encode(), safe_files.RECORD_MODE)
    except (OSError, UnsafeFileError) as error:
        progress.step(f"canary record {path}: not written ({error})")


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_options(canary: CanaryOptions) -> str:
    """One phrase for the router's description: what the progressive switch will do."""
    shares = " -> ".join(f"{share}%" for share in canary.shares)
    return f"progressive {shares} -> 100% (at most {longest(canary):g}s of steps)"
