"""`main`: the switch's command line, end to end (`python -m nocturna_infra.switch`).

    python -m nocturna_infra.switch --upstream-file F --upstream-name N --selection-dir D \
        --slot S --server HOST:PORT [--standby OTHER=HOST:PORT] --health-url URL \
        [--verify-url URL] ...

Validate every flag (`options`), then run the switch in order (`orchestration`): probe the
target directly, run the smoke checks against it, take the lock and run the transaction
(`transaction`: only if a slot's servers change, atomically replace the upstream file, `nginx
-t`, reload; then flip the selection file, which Nginx reads on the next request, and verify
through Nginx; any failure after the first write puts the previous selection and file back).
With `--watch-seconds`, the lock is released and the new slot watched through Nginx (see
`gates`); if it fails, the switch re-takes the lock and switches back, health-gated. Exit
codes: `exits`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from nocturna_infra.cli import UsageError
from nocturna_infra.traffic.exits import ExitCode, Interrupted, SwitchError
from nocturna_infra.traffic.masking import mask
from nocturna_infra.traffic.options import parse_options
from nocturna_infra.traffic.orchestration import run
from nocturna_infra.traffic.transaction import Progress, SignalGuard


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] | None = None) -> int:
    """CLI entry point; the clock is injectable so tests can pin the recorded write time."""
    guard = SignalGuard()
    # Handlers first: a signal from here on is answered by restoring, or "nothing changed".
    with guard.installed():
        try:
            opts = parse_options(sys.argv[1:] if argv is None else argv)
        except UsageError as error:
            print(f"switch: {error}", file=sys.stderr)
            return ExitCode.USAGE
        except SystemExit as done:  # --help
            return int(done.code or 0)
        progress = Progress(opts.secrets)
        try:
            summary = run(opts, now or (lambda: datetime.now(UTC)), progress, guard)
        except SwitchError as failure:
            print(f"switch: {mask(failure.reason, opts.secrets)}", file=sys.stderr)
            return failure.code
        except Interrupted as interrupted:  # before the first write: nothing to put back
            name = signal.Signals(interrupted.signum).name
            print(f"switch: interrupted by {name}; nothing changed", file=sys.stderr)
            return 128 + interrupted.signum
    print(f"switch: {mask(summary, opts.secrets)}", flush=True)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
