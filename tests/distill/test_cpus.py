"""usable_cpus: the affinity mask capped by the cgroup CPU quota (v2 cpu.max, v1 cfs quota), on fake /proc + /sys."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import cpus


def _root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        f = tmp_path / "sys/fs/cgroup" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


@pytest.fixture()
def eight_cpus(monkeypatch):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 8)


def test_cgroup_v2_quota_of_a_pod_caps_the_affinity(tmp_path, eight_cpus):
    root = _root(tmp_path, "0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "150000 100000\n",
                                                       "kubepods/cpu.max": "max 100000\n"})
    assert cpus.cgroup_cpu_limit(root) == pytest.approx(1.5)
    assert cpus.usable_cpus(root) == 2  # 1.5 CPUs of quota: two threads can each get work done


def test_a_parent_cgroup_quota_counts_and_the_tightest_wins(tmp_path, eight_cpus):
    root = _root(tmp_path, "0::/a/b\n", {"a/b/cpu.max": "max 100000", "a/cpu.max": "300000 100000",
                                         "cpu.max": "max 100000"})
    assert cpus.usable_cpus(root) == 3


def test_cgroup_v1_cfs_quota(tmp_path, eight_cpus):
    root = _root(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n",
                 {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cpus.usable_cpus(root) == 2


def test_no_quota_or_no_cgroup_leaves_the_affinity(tmp_path, eight_cpus):
    assert cpus.usable_cpus(_root(tmp_path / "a", "0::/\n", {"cpu.max": "max 100000"})) == 8
    assert cpus.usable_cpus(tmp_path / "nothing") == 8
    assert cpus.usable_cpus(_root(tmp_path / "b", "0::/\n", {"cpu.max": "garbage"})) == 8


def test_a_tiny_quota_still_allows_one_thread(tmp_path, eight_cpus):
    assert cpus.usable_cpus(_root(tmp_path, "0::/\n", {"cpu.max": "10000 100000"})) == 1


def test_this_machine():
    n = cpus.usable_cpus()
    assert 1 <= n <= cpus.affinity_cpus()
