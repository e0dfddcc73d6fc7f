"""The switch's file transaction (`transaction`) against a real Nginx: the upstream rewrite with
`nginx -t` and reload when servers change, the restore after a failed verification or a signal,
complete files after SIGKILL, and a shared directory where no symlink is followed."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic import transaction
from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from nocturna_infra.traffic.transaction import backoff
from nocturna_infra.traffic.upstream import render_upstream
from tests.backends import Backend
from tests.nginx_instance import (
    STAGING,
    UPSTREAM_NAME,
    NginxInstance,
    render_site_conf,
    switch_argv,
)
from tests.ports import free_port
from tests.traffic.switch_helpers import (
    BEFORE,
    BLUE_SELECTED,
    GREEN_SELECTED,
    NO_WAIT,
    NOW,
    both_groups,
    call_recorder,
    calls,
    selection,
    served_eventually,
    start_switch,
    state,
    wait_for,
)

pytestmark = pytest.mark.nginx


# --- servers change: the one case that rewrites the file, tests and reloads -----------------


def env_recorder(dump: Path, then: str) -> str:
    """A command that writes its environment to `dump`, then runs `then`."""
    return shlex.join(["sh", "-c", f"env > {shlex.quote(str(dump))}; exec {then}"])


def test_nginx_commands_get_path_and_not_the_key_or_the_pulumi_environment(
    nginx, green2, tmp_path, monkeypatch
) -> None:
    """Issue 17, finding 7: `nginx -t` and the reload run with PATH only."""
    monkeypatch.setenv("API_KEY", "child-env-key-91c2")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "child-env-passphrase")
    tested, reloaded = tmp_path / "test.env", tmp_path / "reload.env"
    checks = '[{"name": "h", "path": "/health", "headers": {"X-Key": "${API_KEY}"}}]'
    argv = switch_argv(
        nginx,
        green2,
        "--smoke-checks", checks,
        "--nginx-test", env_recorder(tested, nginx.test_command),
        "--nginx-reload", env_recorder(reloaded, nginx.reload_command),
    )  # fmt: skip

    assert main(argv, now=lambda: NOW) == ExitCode.OK

    for dump in (tested, reloaded):
        text = dump.read_text()
        assert f"PATH={os.environ['PATH']}\n" in text
        assert "child-env-key-91c2" not in text
        assert "child-env-passphrase" not in text


def test_server_change_rewrites_the_file_with_one_test_and_one_reload(
    nginx, blue, green2, tmp_path, capsys
) -> None:
    log_test, log_reload = tmp_path / "tests.log", tmp_path / "reloads.log"
    argv = switch_argv(
        nginx,
        green2,
        "--nginx-test", call_recorder(log_test, 0, nginx.test_command),
        "--nginx-reload", call_recorder(log_reload, 0, nginx.reload_command),
    )  # fmt: skip
    old = nginx.upstream_file.read_bytes()

    code = main(argv, now=lambda: NOW)

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert nginx.upstream_file.read_text() == both_groups(blue.server, green2.server)
    assert Path(f"{nginx.upstream_file}.prev").read_bytes() == old
    assert (calls(log_test), calls(log_reload)) == (1, 1)
    assert f"write {nginx.upstream_file}: blue -> {blue.server}, green -> {green2.server} " in out
    assert selection(nginx) == GREEN_SELECTED
    assert served_eventually(nginx, "green") == "green"
    assert green2.requests_seen > 1  # the new port answers, not the old green


def test_first_switch_writes_both_groups_and_the_selection(nginx, blue, green) -> None:
    nginx.upstream_file.unlink()
    for path in nginx.selection_dir.iterdir():
        path.unlink()

    code = main(switch_argv(nginx, green, other=blue), now=lambda: NOW)

    assert code == ExitCode.OK
    assert state(nginx) == (both_groups(blue.server, green.server).encode(), GREEN_SELECTED)
    assert served_eventually(nginx, "green") == "green"


def test_first_switch_without_the_fallback_slot_exits_2_and_writes_nothing(
    nginx, green, capsys
) -> None:
    nginx.upstream_file.unlink()

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "switch: --fallback-slot blue: no servers known for it (the site config proxies to "
        "nocturna-img-production-blue when no other slot is selected); pass --standby "
        "blue=HOST:PORT\n"
    )
    assert not nginx.upstream_file.exists()
    assert selection(nginx) == BLUE_SELECTED


def test_server_change_rejected_by_nginx_t_exits_4_and_restores_byte_for_byte(
    nginx, green2, capsys
) -> None:
    before = state(nginx)
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")  # an unrelated broken vhost

    code = main(switch_argv(nginx, green2), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG_REJECTED
    assert err.startswith("switch: nginx -t rejected the new file (exit 1: ")
    assert err.endswith("; previous file restored\n")
    assert 'unknown directive "this_is_not_a_directive"' in err
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_first_deploy_rejected_by_nginx_t_leaves_no_file(nginx, blue, green, capsys) -> None:
    nginx.upstream_file.unlink()
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")

    code = main(switch_argv(nginx, green, other=blue), now=lambda: NOW)

    assert code == ExitCode.CONFIG_REJECTED
    assert not nginx.upstream_file.exists()
    assert selection(nginx) == BLUE_SELECTED
    assert nginx.slot_served() == "blue"  # the running Nginx never loaded anything new


def test_reload_failure_exits_5_restores_and_reloads_previous(
    nginx, green2, tmp_path, capsys
) -> None:
    before = state(nginx)
    log = tmp_path / "reloads.log"

    code = main(
        switch_argv(nginx, green2, "--nginx-reload", call_recorder(log, 1), *NO_WAIT),
        now=lambda: NOW,
    )

    assert code == ExitCode.RELOAD_FAILED
    assert capsys.readouterr().err == (
        "switch: reload failed (exit 1: no output); previous file restored"
        "; reload with the previous file also failed (exit 1: no output)\n"
    )
    assert calls(log) == 2
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_nginx_stopped_is_started_with_the_new_file(nginx, green2) -> None:
    nginx.stop()

    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK

    assert nginx.master_pid() is not None
    assert nginx.slot_served() == "green"


def test_nginx_stopped_that_will_not_start_exits_5_and_restores_file(nginx, green2, capsys) -> None:
    before = state(nginx)
    nginx.stop()

    code = main(switch_argv(nginx, green2, "--nginx-start", "false"), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.RELOAD_FAILED
    assert err.startswith("switch: reload failed (Nginx is not running and did not start (")
    assert state(nginx) == before


# --- verification: a failed one puts the previous selection back ----------------------------


def test_site_that_ignores_the_selection_fails_verification_exit_6_and_restores(
    nginx, green, capsys
) -> None:
    site = nginx.prefix / "nocturna-chart.conf"
    # A site still proxying to blue's group, whatever the selection says.
    site.write_text(
        site.read_text().replace("set $nocturna_production_live nocturna-img-production-green;", "")
    )
    subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True, timeout=30)
    time.sleep(0.3)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.VERIFY_FAILED
    assert capsys.readouterr().err == (
        f"switch: verification through Nginx failed ({nginx.verify_url('/health')} was "
        f"answered by 127.0.0.1:{nginx.blue_port}, not by {green.server})"
        "; previous selection restored\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_server_change_failing_verification_restores_file_selection_and_reloads(
    nginx, green2, capsys
) -> None:
    before = state(nginx)
    # A reload that does nothing: like a stale single-file bind mount, Nginx keeps the old
    # upstream although the command succeeded.
    code = main(switch_argv(nginx, green2, "--nginx-reload", "true", *NO_WAIT), now=lambda: NOW)

    assert code == ExitCode.VERIFY_FAILED
    err = capsys.readouterr().err
    assert err.startswith("switch: verification through Nginx failed (")
    assert err.endswith("; previous selection restored and previous file restored and reloaded\n")
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


# --- signals and SIGKILL: restored, or old/new complete files, never "nothing changed" -------


@pytest.mark.parametrize("kill_point", ["probe", "nginx-test"])
def test_sigkill_during_switch_leaves_complete_files_and_no_stale_lock(
    nginx, blue, green2, tmp_path, kill_point
) -> None:
    before = nginx.upstream_file.read_bytes()
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    if kill_point == "probe":
        green2.healthy_after = 60.0
        green2.start_clock()
        argv = switch_argv(nginx, green2, "--attempts", "100", "--interval", "0.1")
        reached = lambda: green2.requests_seen > 0  # noqa: E731 (one-line condition)
    else:
        argv = switch_argv(nginx, green2, "--nginx-test", slow_test)
        reached = marker.exists
    process = start_switch(argv)
    try:
        wait_for(reached)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    after = nginx.upstream_file.read_text()
    new = both_groups(blue.server, green2.server).split("\n", 2)[2]
    assert after.encode() == before if kill_point == "probe" else after.endswith(new)
    assert selection(nginx) == BLUE_SELECTED

    # A rerun is not blocked by a stale lock and leaves Nginx really routing to the new green,
    # even when the killed run had already written the file but never reloaded.
    green2.healthy_after = 0.0
    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK
    assert served_eventually(nginx, "green") == "green"
    assert green2.requests_seen > 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_after_the_first_write_restores_previous_file(
    nginx, green2, tmp_path, signum
) -> None:
    before = state(nginx)
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    process = start_switch(
        switch_argv(nginx, green2, "--nginx-test", slow_test), stderr=subprocess.PIPE
    )
    wait_for(marker.exists)

    process.send_signal(signum)
    _, err = process.communicate(timeout=20)

    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum
    assert err == f"switch: interrupted by {name}; previous file restored\n"
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_signal_arriving_right_after_the_rename_is_answered_with_a_restore(
    nginx, green, monkeypatch, capsys
) -> None:
    """The window between the atomic rename and the bookkeeping: the selection already
    routes to green when SIGTERM lands; "nothing changed" would be a lie."""
    before = state(nginx)
    real_replace = os.replace

    def replace_then_sigterm(src, dst):  # type: ignore[no-untyped-def]
        real_replace(src, dst)
        if str(dst).endswith(".green"):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_sigterm)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "switch: interrupted by SIGTERM; previous selection restored\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_a_second_signal_does_not_abort_the_restore(nginx, green, monkeypatch, capsys) -> None:
    before = state(nginx)
    real_write = transaction.write_markers
    writes = []

    def write_then_signal(*args):  # type: ignore[no-untyped-def]
        writes.append(args[-1])
        if len(writes) == 1:
            real_write(*args)
            os.kill(os.getpid(), signal.SIGTERM)  # the first signal, after the flip
        else:
            os.kill(os.getpid(), signal.SIGINT)  # a second one, as the restore starts
            real_write(*args)

    monkeypatch.setattr(transaction, "write_markers", write_then_signal)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "switch: interrupted by SIGTERM; previous selection restored\n"
    )
    assert len(writes) == 2
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


# --- a shared directory: no symlink followed, nothing unsafe accepted ------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file a local attacker would like the switch to overwrite or copy."""
    path = tmp_path / "shadow"
    path.write_text("root:secret-hash\n")
    path.chmod(0o600)
    return path


def test_symlinked_lock_file_is_refused_and_its_target_untouched(
    nginx, green, victim, capsys
) -> None:
    lock = Path(f"{nginx.upstream_file}.lock")
    lock.symlink_to(victim)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: lock file: {lock}: is a symlink; refusing to follow it\n"
    )
    assert victim.read_text() == "root:secret-hash\n"
    assert state(nginx) == before


def test_symlinked_upstream_file_is_refused_and_nothing_leaks_into_prev(
    nginx, green2, victim, capsys
) -> None:
    nginx.upstream_file.unlink()
    nginx.upstream_file.symlink_to(victim)

    code = main(switch_argv(nginx, green2), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: {nginx.upstream_file}: is a symlink; refusing to follow it; nothing changed\n"
    )
    assert not Path(f"{nginx.upstream_file}.prev").exists()
    assert victim.read_text() == "root:secret-hash\n"


def test_planted_prev_symlink_is_replaced_not_followed(nginx, green2, victim) -> None:
    prev = Path(f"{nginx.upstream_file}.prev")
    prev.symlink_to(victim)

    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK

    assert victim.read_text() == "root:secret-hash\n"
    assert not prev.is_symlink()
    assert stat.S_IMODE(prev.stat().st_mode) == 0o644


def test_every_temp_pattern_left_by_a_killed_switch_is_removed(nginx, green) -> None:
    stale = [
        nginx.upstream_file.with_name(f".{nginx.upstream_file.name}.tmp.99999"),
        nginx.upstream_file.with_name(f".{nginx.upstream_file.name}.prev.tmp.99999.ab12cd34"),
        nginx.selection_dir / ".nocturna-img-production.green.tmp.99999.ab12cd34",
        nginx.selection_dir / ".nocturna-img-production.blue.tmp.1.00000000",
    ]
    for path in stale:
        path.write_text("half-writ")

    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    assert [path for path in stale if path.exists()] == []
    assert selection(nginx) == GREEN_SELECTED


@pytest.mark.parametrize(
    ("which", "mode", "owner", "problem"),
    [
        pytest.param("upstreams", 0o775, 0, "group- or world-writable (mode 775)", id="group-w"),
        pytest.param("selection", 0o1777, 0, "group- or world-writable (mode 1777)", id="sticky"),
        pytest.param("upstreams", 0o755, 1000, "owned by uid 1000, not by root", id="owner"),
    ],
)
def test_directory_others_could_write_is_refused_with_exit_8(
    nginx, green, capsys, which, mode, owner, problem
) -> None:
    directory = nginx.prefix / which
    os.chown(directory, owner, -1)
    directory.chmod(mode)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.FILESYSTEM
    assert err.startswith(f"switch: {'lock file: ' if which == 'upstreams' else ''}{directory}: ")
    assert problem in err
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_lock_file_is_owner_only(nginx, green) -> None:
    old_umask = os.umask(0)
    try:
        assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    finally:
        os.umask(old_umask)

    lock = Path(f"{nginx.upstream_file}.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o000, 0o077], ids=["umask-000", "umask-077"])
def test_files_get_an_explicit_mode_whatever_the_umask(nginx, green2, umask) -> None:
    """World-writable under umask 000; unreadable by the workers under 077."""
    old_umask = os.umask(umask)
    try:
        assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK
    finally:
        os.umask(old_umask)

    marker = nginx.selection_dir / "nocturna-img-production.green"
    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(marker.stat().st_mode) == 0o644


def test_the_old_files_mode_is_kept_without_world_write(nginx, green2) -> None:
    nginx.upstream_file.chmod(0o646)

    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK

    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o644
    nginx.upstream_file.chmod(0o640)
    green_port_again = Backend("green").start()
    try:
        assert main(switch_argv(nginx, green_port_again), now=lambda: NOW) == ExitCode.OK
    finally:
        green_port_again.stop()
    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o640


# --- moving a host from the reload-based single group to the selection ----------------------


def worker_pids(nginx: NginxInstance) -> set[int]:
    master = nginx.master_pid()
    assert master is not None
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def wait_until_gone(pids: set[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"old Nginx workers {sorted(pids)} did not exit"
        time.sleep(0.05)


def test_migration_from_the_single_group_include_takes_one_reload_then_none(
    prefix, blue, green, tmp_path
) -> None:
    """docs/operations.md, "Moving a host to the no-reload switch", with traffic flowing."""
    nginx = NginxInstance(prefix, blue.port, green.port)
    nginx.write_config()
    site = prefix / "nocturna-chart.conf"
    new_site = site.read_text()
    old_site = re.sub(r"\n    open_file_cache off;\n    set .*?\n(    if .*?\n.*?\n    }\n)?", "\n",
                      new_site, flags=re.DOTALL)  # fmt: skip
    old_site = old_site.replace("$nocturna_production_live", UPSTREAM_NAME)
    assert "if (-f" not in old_site and f"proxy_pass http://{UPSTREAM_NAME};" in old_site
    site.write_text(old_site)
    nginx.upstream_file.write_text(render_upstream(UPSTREAM_NAME, "blue", [blue.server], BEFORE))
    nginx.start()
    reloads = tmp_path / "reloads.log"
    stop = threading.Event()
    answers: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not stop.is_set():
                try:
                    response = session.get(
                        nginx.url("/"), timeout=5, headers={"Connection": "close"}
                    )
                    answers.append(response.headers.get("X-Slot", str(response.status_code)))
                except requests.RequestException as error:
                    answers.append(repr(error))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        # Step 2: new upstream file and selection for the live slot, no reload.
        prepare = ["--nginx-test", "true", "--nginx-reload", call_recorder(reloads, 0), *NO_WAIT]
        assert main(switch_argv(nginx, blue, *prepare, other=green), now=lambda: NOW) == 0
        assert calls(reloads) == 1  # the recorder stands for `true`: nothing was reloaded
        reloads.unlink()
        # Step 3: the new site config and the one reload.
        site.write_text(new_site)
        subprocess.run(nginx.command("-t", "-q"), check=True, capture_output=True)
        old_workers = worker_pids(nginx)
        subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True)
        assert served_eventually(nginx, "blue") == "blue"
        # Until the old workers exit they may still answer new connections from the old
        # site config (the reload's own window, not the switch's): let the reload finish.
        wait_until_gone(old_workers)
        # Step 4 and after: switches never reload.
        for target in (blue, green, blue, green):
            argv = switch_argv(nginx, target, "--nginx-reload", call_recorder(reloads, 0), *NO_WAIT)
            assert main(argv, now=lambda: NOW) == ExitCode.OK
            assert nginx.slot_served() == target.slot
    finally:
        stop.set()
        thread.join(timeout=15)
        nginx.stop()

    assert calls(reloads) == 0
    assert set(answers) == {"blue", "green"}, sorted(set(answers))
    assert state(nginx) == (both_groups(blue.server, green.server).encode(), GREEN_SELECTED)


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling", "first", "delay"),
    [
        pytest.param(1, 2.0, 0.1, 0.1, id="first-retry-is-quick"),
        pytest.param(3, 2.0, 0.1, 0.4, id="doubles"),
        pytest.param(8, 2.0, 0.1, 2.0, id="capped-at-interval"),
        pytest.param(1, 0.05, 0.1, 0.05, id="interval-below-first"),
    ],
)
def test_backoff_doubles_up_to_the_interval(attempt, ceiling, first, delay) -> None:
    assert backoff(attempt, ceiling, first) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"PATH": "/opt/nginx/sbin:/usr/bin", "API_KEY": "k", "HOME": "/root"},
            {"PATH": "/opt/nginx/sbin:/usr/bin"},
            id="path-only",
        ),
        pytest.param(
            {"API_KEY": "k"},
            {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            id="default-path",
        ),
    ],
)
def test_child_environment_is_path_alone(environ, expected) -> None:
    assert transaction.child_environment(environ) == expected


# --- a fresh host: Nginx stopped, the upstream file not written yet -------------------------


@pytest.fixture
def fresh_nginx(prefix: Path, blue: Backend, green: Backend) -> Iterator[NginxInstance]:
    """Nginx installed with the shipped site but never started, and the upstream file the site
    includes not written yet (a fresh host before its first `up`)."""
    instance = NginxInstance(prefix, blue.port, green.port)
    instance.write_config()
    yield instance
    instance.stop()


def test_first_switch_on_a_fresh_host_writes_tests_then_starts_nginx(
    fresh_nginx, blue, green, capsys
) -> None:
    """Issue 16: the first `up` on a fresh host exited 5 (`invalid PID number ""`) and removed
    the file it wrote. Now: write the file, test it, find Nginx not running, start it, verify."""
    assert not fresh_nginx.upstream_file.exists()
    assert fresh_nginx.master_pid() is None
    argv = switch_argv(fresh_nginx, blue, other=green)

    assert main(argv, now=lambda: NOW) == ExitCode.OK

    out = capsys.readouterr().out
    assert "Nginx is not running: starting it" in out
    assert fresh_nginx.master_pid() is not None
    assert fresh_nginx.slot_served() == "blue"
    written = fresh_nginx.upstream_file.read_text()
    assert f"server {blue.server};" in written
    assert f"server {green.server};" in written


def test_a_running_nginx_whose_reload_fails_is_not_started_again(nginx, green2, tmp_path) -> None:
    """Start only what is not running: a refused reload of a live Nginx stays a failure
    (exit 5, file restored), and the start command never runs."""
    started = tmp_path / "started"
    argv = switch_argv(
        nginx,
        green2,
        "--nginx-reload", "false",
        "--nginx-start", call_recorder(started, 0),
    )  # fmt: skip

    assert main(argv, now=lambda: NOW) == ExitCode.RELOAD_FAILED

    assert calls(started) == 0
    assert nginx.slot_served() == "blue"


def test_without_a_start_command_a_stopped_nginx_is_named_in_the_failure(
    fresh_nginx, blue, green, capsys
) -> None:
    argv = switch_argv(fresh_nginx, blue, "--nginx-start", "", other=green)

    assert main(argv, now=lambda: NOW) == ExitCode.RELOAD_FAILED

    err = capsys.readouterr().err
    assert "Nginx is not running" in err
    assert "--nginx-start" in err
    assert not fresh_nginx.upstream_file.exists()


def test_first_switch_on_a_fresh_host_with_both_sites_installed(
    fresh_nginx, blue, green, prefix, capsys
) -> None:
    """docs/switch.md installs the production and staging sites side by side. On a fresh host
    neither upstream file exists, and the first switch of either stack exited 4: `nginx -t`
    failed on the other site's missing file. Each site now includes its file through a
    pattern that matches only that name, so a site not deployed yet does not stop the other."""
    staging_upstream = prefix / "upstreams" / "nocturna-img-staging.conf"
    fresh_nginx.extra_conf.write_text(
        render_site_conf(
            STAGING,
            listen_port=free_port(),
            verify_port=free_port(),
            upstream_file=staging_upstream,
            selection_dir=fresh_nginx.selection_dir,
            blue=free_port(),
            green=0,
        )
    )

    assert main(switch_argv(fresh_nginx, blue, other=green), now=lambda: NOW) == ExitCode.OK

    assert not staging_upstream.exists()
    assert fresh_nginx.slot_served() == "blue"
