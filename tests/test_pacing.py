"""Paced writes (hog/pilot/pacing.py): spaced by the lock's measured hold time and the number of
hogs, within a lone hog's flush interval and five minutes (half the lease for a hog that cannot
beat its file); claims ahead that last until then."""

from hog.pilot.pacing import PACED_MAX_FACTOR, TARGET_LOCK_LOAD, Pacing
from hog.pilot.rounds import FLUSH_INTERVAL_S, PREFETCH_HORIZON_S, prefetch_factor
from hog.store.beats import LONGEST_WRITE_SPACING_S


def test_a_hog_that_has_not_written_yet_flushes_within_a_second() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    assert pacing.interval_s() == FLUSH_INTERVAL_S and not pacing.paced


def test_a_lone_hog_on_a_fast_disk_is_not_paced() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.002, wait_s=0.0)
    assert pacing.interval_s() == FLUSH_INTERVAL_S and not pacing.paced


def test_many_hogs_on_a_slow_lock_space_their_writes_by_their_share() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.05, wait_s=0.5)
    pacing.hogs_running = 100
    assert pacing.paced
    assert abs(pacing.interval_s() - 100 * 0.05 / TARGET_LOCK_LOAD) < 1e-9
    # Claims ahead last until the write after next, with its wait and commit.
    assert abs(pacing.horizon_s(0.25) - 2 * (pacing.interval_s() + 0.55)) < 1e-9


def test_claims_ahead_of_an_unpaced_hog_last_until_a_claim_lands() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    assert pacing.horizon_s(0.25) == 0.25
    pacing.observe(hold_s=0.1, wait_s=0.3)  # four hogs on a 20 ms-fsync filesystem
    pacing.hogs_running = 4
    assert not pacing.paced
    assert abs(pacing.horizon_s(0.25) - 0.8) < 1e-9


def test_a_hog_that_beats_its_file_spaces_writes_past_its_lease_up_to_five_minutes() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.1, wait_s=0.0)
    pacing.hogs_running = 1000
    assert abs(pacing.interval_s() - 1000 * 0.1 / TARGET_LOCK_LOAD) < 1e-9  # 167 s: past the lease
    pacing.observe(hold_s=2.0, wait_s=0.0)
    assert pacing.interval_s() == LONGEST_WRITE_SPACING_S


def test_without_a_beat_file_the_lease_bounds_how_long_results_wait() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.beating = False  # its beat file could not be written
    pacing.observe(hold_s=0.1, wait_s=0.0)
    pacing.hogs_running = 1000
    assert pacing.interval_s() == 46.0


def test_measurements_are_smoothed() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.1, wait_s=1.0)
    pacing.observe(hold_s=0.2, wait_s=0.0)
    assert 0.1 < pacing.hold_s < 0.2 and 0.0 < pacing.wait_s < 1.0


def test_paced_claims_hold_enough_ahead_and_at_least_a_node_full() -> None:
    # 10 s tasks, 64 cores, a minute to the write after next: 6 node-fulls, whatever the share.
    assert prefetch_factor(10.0, 1000, 64, horizon_s=60.0) == 6
    # Ten-minute tasks: one node-full ahead, so that each ending task does not call for a write.
    assert prefetch_factor(600.0, 1000, 64, horizon_s=60.0) == 1
    # One-second tasks: capped.
    assert prefetch_factor(1.0, 1000, 64, horizon_s=600.0) == PACED_MAX_FACTOR
    # Not paced: as before.
    assert prefetch_factor(10.0, 1000, 64, horizon_s=PREFETCH_HORIZON_S) == 0
