"""The shipped Nginx site configs pass `nginx -t` installed side by side, as on a host."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nocturna_infra.traffic.split import Steps, render_splits, render_steps, steps_path
from nocturna_infra.traffic.upstream import render_upstreams
from tests.nginx_instance import DEFAULT_SELECTION_DIR, MAIN_CONF, NGINX, REPO, include_pattern

pytestmark = pytest.mark.nginx

SITES = {
    "nocturna-chart.conf": (
        "nocturna-img-production",
        {"blue": ["127.0.0.1:3014"], "green": ["127.0.0.1:3012"]},
    ),
    "nocturna-chart-staging.conf": ("nocturna-img-staging", {"staging": ["127.0.0.1:3013"]}),
}

LIVE = {"nocturna-img-production": "nocturna_production_live", "nocturna-img-staging": "-"}
"""The variable each site proxies to (staging has one slot: no steps to set it)."""


def install(prefix: Path, *, with_upstreams: bool, steps: Steps | None = None) -> Path:
    """Both sites with their upstream files under `prefix` instead of /etc/nginx; with
    `steps`, the canary splits and steps files a progressive switch writes, too."""
    includes = []
    for site, (upstream, groups) in SITES.items():
        upstream_file = prefix / "upstreams" / f"{upstream}.conf"
        upstream_file.parent.mkdir(exist_ok=True)
        if with_upstreams:
            text = render_upstreams(upstream, groups, datetime.now(UTC))
            if steps is not None:
                text += render_splits(upstream, list(groups), steps)
                steps_path(upstream_file).write_text(
                    render_steps(
                        upstream, list(groups), steps, prefix / "selection", LIVE[upstream]
                    )
                )
            upstream_file.write_text(text)
        text = (REPO / "nginx" / site).read_text()
        text = text.replace(
            f"/etc/nginx/upstreams/{upstream}.con[f]", include_pattern(upstream_file)
        )
        text = text.replace(
            f"/etc/nginx/upstreams/{upstream}.steps.con[f]",
            include_pattern(steps_path(upstream_file)),
        )
        text = text.replace(DEFAULT_SELECTION_DIR, str(prefix / "selection"))
        (prefix / site).write_text(text)
        includes.append(f"    include {prefix / site};")
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\ninclude {MAIN_CONF};\n"
        "events {}\nhttp {\n" + "\n".join(includes) + "\n}\n"
    )
    return conf


def nginx_test(prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_production_and_staging_sites_install_side_by_side(tmp_path: Path) -> None:
    result = nginx_test(tmp_path, install(tmp_path, with_upstreams=True))

    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_sites_pass_nginx_t_with_the_canary_steps_a_progressive_switch_writes(
    tmp_path: Path,
) -> None:
    result = nginx_test(tmp_path, install(tmp_path, with_upstreams=True, steps=Steps((5, 25))))

    assert result.returncode == 0, result.stderr
    assert "to_green_25" in (tmp_path / "upstreams" / "nocturna-img-production.conf").read_text()


def test_production_site_includes_the_steps_file_after_its_selection_in_both_servers() -> None:
    text = (REPO / "nginx" / "nocturna-chart.conf").read_text()
    include = "include /etc/nginx/upstreams/nocturna-img-production.steps.con[f];"
    selection = "set $nocturna_production_live nocturna-img-production-green;\n    }\n"

    assert text.count(include) == 2
    assert text.count(selection) == 2
    assert all(part.index(selection) < part.index(include) for part in text.split("server {")[1:])


def test_sites_pass_nginx_t_before_a_first_switch_wrote_their_upstream_files(
    tmp_path: Path,
) -> None:
    """A fresh host: Nginx starts with both sites before either stack's first switch."""
    result = nginx_test(tmp_path, install(tmp_path, with_upstreams=False))

    assert result.returncode == 0, result.stderr


def test_each_site_includes_only_its_own_upstream_file_by_pattern(tmp_path: Path) -> None:
    """The pattern matches the one name, never the .prev, .lock or temp files beside it (a
    .prev defining the same groups again would make `nginx -t` fail on duplicates)."""
    install(tmp_path, with_upstreams=True)
    for upstream, groups in SITES.values():
        upstream_file = tmp_path / "upstreams" / f"{upstream}.conf"
        text = render_upstreams(upstream, groups, datetime.now(UTC))
        for beside in (".prev", ".lock", f".tmp.{upstream}"):
            (upstream_file.parent / f"{upstream_file.name}{beside}").write_text(text)

    result = nginx_test(tmp_path, tmp_path / "nginx.conf")

    assert result.returncode == 0, result.stderr


def test_each_site_defines_only_groups_its_upstream_file_renders() -> None:
    """The selection can only name a slot the configuration defines: every group a site
    proxies to (through its variable) is one the switch writes for that site's slots."""
    for site, (upstream, groups) in SITES.items():
        text = (REPO / "nginx" / site).read_text()
        named = set(re.findall(rf"set \$\w+ ({re.escape(upstream)}-\w+);", text))
        assert named == {f"{upstream}-{slot}" for slot in groups}, site
        assert "proxy_pass http://$" in text
        assert "open_file_cache off;" in text


def test_only_production_claims_default_server() -> None:
    production = (REPO / "nginx" / "nocturna-chart.conf").read_text()
    staging = (REPO / "nginx" / "nocturna-chart-staging.conf").read_text()

    assert production.count("default_server") == 1
    assert "default_server" not in staging
    assert production.count("server_tokens off;") == staging.count("server_tokens off;") == 2
