"""What the request-start log (mirror subrequest) costs clients: the shipped site against
the same site without the two mirror lines, under the same unpaced wrk load, alternating runs.

    venv/bin/python benchmarks/mirror_cost.py --runs 3 --seconds 10
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.backends import Backend
from tests.nginx_instance import NginxInstance


def run_wrk(url: str, seconds: int) -> tuple[float, str, str]:
    done = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\n\s+50%\s+(\S+)", done.stdout).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", done.stdout).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    assert errors is None, done.stdout
    return rps, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    blue, green = Backend("blue").start(), Backend("green").start()
    instances = {}
    try:
        for name in ("mirror", "plain"):
            prefix = Path(tempfile.mkdtemp(prefix=f"nocturna-mirror-{name}-"))
            nginx = NginxInstance(prefix, blue.port, green.port)
            nginx.write_config()
            if name == "plain":
                site = prefix / "nocturna-chart.conf"
                text = site.read_text()
                text = text.replace("        mirror /_nocturna_started;\n", "")
                text = text.replace("        mirror_request_body off;\n", "")
                site.write_text(text)
            nginx.write_routing(
                "blue", {"blue": blue.server, "green": green.server}, datetime.now(UTC)
            )
            nginx.start()
            instances[name] = nginx
        for run in range(1, args.runs + 1):
            for name, nginx in instances.items():
                rps, p50, p99 = run_wrk(nginx.url("/"), args.seconds)
                lines = (
                    len(nginx.started_log.read_text().splitlines())
                    if nginx.started_log.exists()
                    else 0
                )
                print(
                    f"run {run} {name:6s}: {rps:9.0f} rps  p50 {p50:>8s}  p99 {p99:>8s}  "
                    f"start lines {lines}"
                )
    finally:
        for nginx in instances.values():
            nginx.stop()
            shutil.rmtree(nginx.prefix)
        blue.stop()
        green.stop()


if __name__ == "__main__":
    main()
