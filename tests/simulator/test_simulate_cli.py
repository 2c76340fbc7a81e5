"""`tracekit simulate`: one call into `tracekit.simulator.api.simulate`."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from tracekit.simulator.api import injected_faults, simulate
from tracekit.simulator.workloads import WORKLOADS
from tracekit.cli import main
from tracekit.cli.simulate import WORKLOAD_NAMES
from tracekit.trace import read_metadata


def test_the_command_lists_every_workload_in_the_library():
    assert WORKLOAD_NAMES == tuple(WORKLOADS)


def test_the_command_writes_what_the_api_writes(tmp_path):
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(main, ["simulate", "udp-connected", "--events", "3000", "--seed",
                                       "4", "--hosts", "2", "--inject-faults", "0.01", "-o",
                                       str(out)])
    assert result.exit_code == 0, result.output
    api = simulate("udp-connected", events=3000, seed=4, hosts=2, inject_faults=0.01,
                   output=tmp_path / "api.parquet")
    assert out.read_bytes() == api.read_bytes()
    assert injected_faults(out).num_rows > 0


def test_the_default_workload_is_steady_and_kernel_is_recorded(tmp_path):
    out = tmp_path / "t.parquet"
    result = CliRunner().invoke(main, ["simulate", "-n", "500", "-o", str(out), "--kernel",
                                       "5.15.0-91-generic"])
    assert result.exit_code == 0, result.output
    metadata = read_metadata(out)
    assert metadata["tracekit.workload"] == "steady"
    assert metadata["tracekit.kernel"] == "5.15.0-91-generic"


def test_an_unknown_workload_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "stampede", "-o", str(tmp_path / "t.parquet")])
    assert result.exit_code == 2
    assert "stampede" in result.output and not (tmp_path / "t.parquet").exists()


def test_more_hosts_than_events_exits_2_with_the_reason(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tracekit", "simulate", "-n", "2", "--hosts", "3", "-o",
         str(tmp_path / "t.parquet")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("tracekit: --hosts must be between 1 and the number of "
                                     "events, got 3")
