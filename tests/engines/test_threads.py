"""The default thread policy: as many threads as the cores that are free at the start."""

import pytest
import torch

from pcsim.engines.torch import device


def test_busy_cores_is_the_non_idle_share_of_cpu_time(tmp_path, monkeypatch):
    """Two samples of /proc/stat's aggregate line 0.1 s apart: 50 of 100 jiffies not idle
    (idle and iowait are idle; user, nice, system, irq, softirq, steal are not) on a
    2-core machine is one busy core."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")

    def sleep(seconds):  # the second sample: +30 user, +10 system, +10 steal, +40 idle, +10 iowait
        stat.write_text("cpu  130 0 110 740 110 0 0 10 0 0\n")

    monkeypatch.setattr(device.time, "sleep", sleep)
    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    assert device.busy_cores(stat_path=str(stat)) == pytest.approx(1.0)
    assert device.busy_cores(stat_path=str(tmp_path / "missing")) is None


@pytest.mark.parametrize("busy, cores, expected", [
    (0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (2.0, 2, 1), (5.0, 2, 1),
    (3.4, 16, 13), (None, 2, 2)])
def test_default_threads_leave_the_busy_cores_alone(busy, cores, expected, monkeypatch):
    """Cores less the busy ones (rounded), at least 1, at most torch's own default."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    if busy is None:  # no /proc/stat: every core
        monkeypatch.setattr(device, "busy_cores", lambda: None)
    n, why = device.default_threads(busy=busy, cores=cores)
    assert n == expected
    assert f"{cores} core(s)" in why
    if busy is not None:
        assert f"{busy:.1f} busy" in why
