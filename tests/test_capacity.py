"""Parallelism from regional quotas, and the schedule a batch gets at a parallelism (pure functions)."""

from __future__ import annotations

import pytest

from sinergym_cloud import capacity
from sinergym_cloud.capacity import Quota, VmShape

N2_8 = VmShape("n2-highcpu-8", 8)


def region(**limits: tuple[float, float]) -> list[Quota]:
    return [Quota(metric, limit, usage) for metric, (limit, usage) in limits.items()]


def test_a_new_project_runs_three_n2_highcpu_8() -> None:
    quotas = region(CPUS=(24, 0), N2_CPUS=(24, 0), INSTANCES=(24, 0))
    p = capacity.parallelism(30, N2_8, quotas)
    assert p.value == 3
    assert p.reason == "quota N2_CPUS: 24 free / 8 vCPUs per VM (n2-highcpu-8)"


def test_usage_is_subtracted_and_the_tightest_quota_wins() -> None:
    quotas = region(CPUS=(96, 0), N2_CPUS=(64, 40), INSTANCES=(10, 9))
    assert capacity.parallelism(30, N2_8, quotas).value == 1  # 1 instance left
    quotas = region(CPUS=(96, 0), N2_CPUS=(64, 40), INSTANCES=(100, 0))
    p = capacity.parallelism(30, N2_8, quotas)
    assert (p.value, p.limits[0].metric, p.limits[0].vms) == (3, "N2_CPUS", 3)


def test_families_without_their_own_quota_count_against_cpus() -> None:
    quotas = region(CPUS=(24, 4), N2_CPUS=(24, 0))
    assert capacity.cpu_metric(VmShape("e2-standard-4", 4), capacity.by_metric(quotas)) == "CPUS"
    assert capacity.parallelism(30, VmShape("e2-standard-4", 4), quotas).value == 5


def test_spot_vms_use_preemptible_quota_only_where_the_project_has_it() -> None:
    spot = VmShape("n2-highcpu-8", 8, spot=True)
    with_it = capacity.by_metric(region(N2_CPUS=(8, 0), PREEMPTIBLE_CPUS=(64, 0)))
    without = capacity.by_metric(region(N2_CPUS=(8, 0), PREEMPTIBLE_CPUS=(0, 0)))
    assert capacity.cpu_metric(spot, with_it) == "PREEMPTIBLE_CPUS"
    assert capacity.cpu_metric(spot, without) == "N2_CPUS"
    assert capacity.parallelism(20, spot, with_it.values()).value == 8


def test_external_addresses_count_only_when_the_template_gives_one() -> None:
    quotas = region(N2_CPUS=(800, 0), IN_USE_ADDRESSES=(8, 6))
    assert capacity.parallelism(50, N2_8, quotas).value == 50
    assert capacity.parallelism(50, VmShape("n2-highcpu-8", 8, external_ip=True), quotas).value == 2


def test_max_parallel_lowers_but_never_raises_the_quota() -> None:
    quotas = region(N2_CPUS=(800, 0))
    p = capacity.parallelism(200, N2_8, quotas, asked=20)
    assert (p.value, p.reason) == (20, "max_parallel 20")
    assert capacity.parallelism(200, N2_8, region(N2_CPUS=(24, 0)), asked=20).value == 3
    assert capacity.parallelism(4, N2_8, quotas, asked=20).value == 4  # no more VMs than experiments


def test_no_room_still_asks_for_one_and_no_quotas_means_only_the_batch_bounds_it() -> None:
    assert capacity.parallelism(10, N2_8, region(N2_CPUS=(24, 24))).value == 1
    p = capacity.parallelism(10, None, None)
    assert (p.value, p.reason) == (10, "the batch has 10 experiment(s)")
    assert capacity.parallelism(10, None, None, asked=4).value == 4


@pytest.mark.parametrize(
    ("hours", "parallel", "waves", "makespan"),
    [
        ([1.0] * 6, 2, 3, 3.0),
        ([1.0] * 6, 6, 1, 1.0),
        ([3.0, 1.0, 1.0, 1.0], 2, 2, 3.0),  # the short ones run beside the long one
        ([1.0, 1.0, 3.0], 2, 2, 4.0),
        ([], 3, 0, 0.0),
    ],
)
def test_schedule(hours: list[float], parallel: int, waves: int, makespan: float) -> None:
    s = capacity.schedule(hours, parallel)
    assert (s.waves, s.makespan_hours, s.vm_hours) == (waves, makespan, sum(hours))


def test_names() -> None:
    url = "https://compute.googleapis.com/compute/v1/projects/p/zones/europe-west1-b/machineTypes/n2-highcpu-8"
    assert capacity.machine_type_name(url) == "n2-highcpu-8"
    assert capacity.machine_type_name("e2-medium") == "e2-medium"
    assert capacity.region_of("europe-west1-b") == "europe-west1"
    with pytest.raises(ValueError, match="not a machine type"):
        capacity.machine_type_name("zones/x/disks/y")


def test_a_vm_runs_one_simulation_per_vcpu_at_full_speed() -> None:
    e2_2 = VmShape("e2-standard-2", 2)
    assert capacity.simulations_at_full_speed(2) == 2 and capacity.simulations_at_full_speed(0) == 1
    assert capacity.crowded(e2_2, [1, 2, 4, 3]) == [2, 3]
    assert capacity.crowded(N2_8, [8, 4]) == []
