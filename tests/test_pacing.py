"""Paced writes (hog/pilot/pacing.py): spaced by the lock's measured hold time and the number of
hogs, within a lone hog's flush interval and ten minutes (half the lease for a hog that cannot
beat its file); claims ahead that last until then."""

import random

from hog.pilot.pacing import (
    PACED_LISTEN_S,
    PACED_MAX_TASKS,
    PREFETCH_HORIZON_S,
    SPREAD,
    TARGET_LOCK_LOAD,
    Pacing,
    prefetch_factor,
)
from hog.pilot.rounds import FLUSH_INTERVAL_S
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
    # Spacings drawn up to a bound whose mean is the hog's share of the lock.
    assert abs(pacing.bound_s() * (1 - SPREAD / 2) - 100 * 0.05 / TARGET_LOCK_LOAD) < 1e-9
    assert FLUSH_INTERVAL_S <= pacing.interval_s() <= pacing.bound_s()  # its first: a phase
    pacing.observe(hold_s=0.05, wait_s=0.5)
    assert (1 - SPREAD) * pacing.bound_s() <= pacing.interval_s() <= pacing.bound_s()
    # Claims ahead last until the write after next, however long its spacing, with its wait and commit.
    assert abs(pacing.horizon_s(0.25) - 2 * (pacing.bound_s() + 0.55)) < 1e-9


def test_paced_hogs_draw_their_spacings_so_that_hogs_in_step_fall_out_of_it() -> None:
    hogs = [Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S) for _ in range(2)]
    for pacing in hogs:
        pacing.hogs_running = 1000
    share = 1000 * 0.1 / TARGET_LOCK_LOAD
    spacings: list[list[float]] = [[], []]
    for _ in range(200):
        for pacing, drawn in zip(hogs, spacings, strict=True):
            pacing.observe(hold_s=0.1, wait_s=0.0)
            drawn.append(pacing.interval_s())
    assert spacings[0] != spacings[1]  # the same measurements, not the same spacings
    for drawn in spacings:
        assert min(drawn) < 0.6 * max(drawn)
        assert 0.9 * share < sum(drawn) / len(drawn) < 1.1 * share  # on average, the share


def paced_writes(hogs: list[Pacing], until_s: float, hold_s: float = 0.1) -> list[float]:
    """When each hog writes from 0 (all together) until `until_s`, each spacing as paced."""
    writes: list[float] = []
    for pacing in hogs:
        at = 0.0
        while at < until_s:
            writes.append(at)
            pacing.observe(hold_s=hold_s, wait_s=0.0)
            at += pacing.interval_s()
    return writes


def test_hogs_that_start_together_write_at_the_steady_rate_from_their_first_spacing() -> None:
    """Draws between half and all of the bound spread hogs that started together only slowly:
    their writes came in waves, past what the lock commits at the crests."""
    hogs = [Pacing(92.0, FLUSH_INTERVAL_S, random.Random(seed)) for seed in range(2000)]
    for pacing in hogs:
        pacing.observe(hold_s=0.1, wait_s=0.0)  # the first claim, then paced among 2,000
        pacing.hogs_running = 2000
    bound = hogs[0].bound_s()
    steady_per_s = len(hogs) / (bound * (1 - SPREAD / 2))
    writes = paced_writes(hogs, until_s=3 * bound)
    bins = [0] * 30  # a tenth of the bound each, after the start
    for at in writes:
        if 0 < at < 3 * bound:
            bins[int(at / (bound / 10))] += 1
    rates = [count / (bound / 10) for count in bins]
    # Without the first spacing's phase: none in the first half bound, 1.5 times the rate after.
    assert all(0.75 * steady_per_s < rate < 1.25 * steady_per_s for rate in rates), rates


def test_a_hog_draws_its_phase_again_when_its_share_grows_with_the_hogs_running() -> None:
    hogs = [Pacing(92.0, FLUSH_INTERVAL_S, random.Random(seed)) for seed in range(1000)]
    for pacing in hogs:
        pacing.observe(hold_s=0.1, wait_s=0.0)
        pacing.hogs_running = 100  # the hogs started so far
        pacing.interval_s()
        pacing.observe(hold_s=0.1, wait_s=0.0)
    # At the same scale each spacing lies between half and all of the bound...
    assert all(pacing.interval_s() >= (1 - SPREAD) * pacing.bound_s() for pacing in hogs)
    for pacing in hogs:
        pacing.hogs_running = 1000  # ... ten times as many hogs: a new phase, most below half of it
    below_half = sum(pacing.interval_s() < (1 - SPREAD) * pacing.bound_s() for pacing in hogs)
    assert 0.55 * len(hogs) < below_half < 0.8 * len(hogs)  # two thirds, as if writing all along
    for pacing in hogs:
        pacing.interval_s()
        pacing.observe(hold_s=0.1, wait_s=3.0)  # long waits stretch the spacing (3.6 times)...
        pacing.interval_s()
        pacing.observe(hold_s=0.1, wait_s=3.0)
    assert all(pacing.bound_s() > 3 * 1000 * 0.1 / TARGET_LOCK_LOAD for pacing in hogs)
    assert all(pacing.interval_s() >= (1 - SPREAD) * pacing.bound_s() for pacing in hogs)  # ... no phase
    for pacing in hogs:
        pacing.hogs_running = 3  # unpaced a while...
        pacing.interval_s()
        pacing.observe(hold_s=0.1, wait_s=0.0)
        pacing.hogs_running = 1000  # ... then paced again: a new phase
    below_half = sum(pacing.interval_s() < (1 - SPREAD) * pacing.bound_s() for pacing in hogs)
    assert 0.55 * len(hogs) < below_half < 0.8 * len(hogs)


def test_claims_ahead_of_an_unpaced_hog_last_until_a_claim_lands_and_its_share_of_the_lock() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    assert pacing.horizon_s(0.25) == 0.25
    pacing.observe(hold_s=0.1, wait_s=0.5)  # a hog on a 20 ms-fsync filesystem, in a line
    assert not pacing.paced
    assert abs(pacing.horizon_s(0.25) - 1.2) < 1e-9  # until a claim lands, twice over
    pacing.hogs_running = 4
    pacing.observe(hold_s=0.1, wait_s=0.0)
    assert not pacing.paced
    # Four hogs claiming every 0.1 s of work would keep the lock busy: each claims once per share.
    assert abs(pacing.horizon_s(0.25) - 2 * 4 * 0.1 / TARGET_LOCK_LOAD) < 1e-9
    lone = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    lone.observe(hold_s=0.002, wait_s=0.0)  # a lone hog on a fast disk: a quarter second
    lone.observe(hold_s=0.002, wait_s=0.0)
    assert lone.horizon_s(0.25) == 0.25


def test_a_hog_that_beats_its_file_spaces_writes_past_its_lease_up_to_ten_minutes() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.1, wait_s=0.0)
    pacing.hogs_running = 1000
    assert pacing.bound_s() * (1 - SPREAD / 2) > 92.0  # 167 s on average: past the lease
    pacing.observe(hold_s=2.0, wait_s=0.0)
    assert pacing.bound_s() == LONGEST_WRITE_SPACING_S
    pacing.observe(hold_s=2.0, wait_s=0.0)  # past the first spacing at that scale (its phase)
    assert pacing.interval_s() >= (1 - SPREAD) * LONGEST_WRITE_SPACING_S


def test_without_a_beat_file_the_lease_bounds_how_long_results_wait() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.beating = False  # its beat file could not be written
    pacing.observe(hold_s=0.1, wait_s=0.0)
    pacing.hogs_running = 1000
    assert pacing.bound_s() == 46.0 and pacing.interval_s() <= 46.0


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
    assert prefetch_factor(1.0, 1000, 64, horizon_s=600.0) == PACED_MAX_TASKS // 64
    # A one-core hog of 10 ms tasks, its claims spaced by a slow lock: a second and a half ahead.
    assert prefetch_factor(0.01, 4, 1, horizon_s=1.5) == 150
    # Not paced: as before.
    assert prefetch_factor(10.0, 1000, 64, horizon_s=PREFETCH_HORIZON_S) == 0


def test_the_spacing_follows_the_hogs_running_and_the_beat_file_after_it_was_asked() -> None:
    pacing = Pacing(lease_s=92.0, flush_interval_s=FLUSH_INTERVAL_S)
    pacing.observe(hold_s=0.1, wait_s=0.0)
    pacing.observe(hold_s=0.1, wait_s=0.0)
    assert pacing.interval_s() == FLUSH_INTERVAL_S  # one hog
    mean = 1 - SPREAD / 2
    pacing.hogs_running = 100
    assert abs(pacing.bound_s() * mean - 100 * 0.1 / TARGET_LOCK_LOAD) < 1e-9
    pacing.hogs_running = 1000
    assert abs(pacing.bound_s() * mean - 1000 * 0.1 / TARGET_LOCK_LOAD) < 1e-9
    pacing.beating = False
    assert pacing.bound_s() == 46.0
    pacing.hogs_running = 100
    assert abs(pacing.bound_s() * mean - 100 * 0.1 / TARGET_LOCK_LOAD) < 1e-9
    pacing.observe(hold_s=0.05, wait_s=0.0)
    assert abs(pacing.bound_s() * mean - 100 * 0.09 / TARGET_LOCK_LOAD) < 1e-9


def test_a_paced_hog_listens_to_the_doorbell_about_once_a_second(tmp_path) -> None:
    import os

    from hog.pilot.wakeup import Wakeup
    from hog.store import doorbell

    path = str(tmp_path / "queue.sqlite.doorbell")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        wakeup = Wakeup(path)
        assert not wakeup.listen(100.0, PACED_LISTEN_S).cancel
        doorbell.ring(fd, 1 << doorbell.CANCEL)
        assert not wakeup.listen(100.5, PACED_LISTEN_S).cancel  # not yet: a second apart
        assert wakeup.next_listen() == 100.0 + PACED_LISTEN_S
        assert wakeup.listen(100.0 + PACED_LISTEN_S, PACED_LISTEN_S).cancel
        doorbell.ring(fd, 1 << doorbell.CANCEL)
        # Unpaced: every LISTEN_S.
        assert wakeup.listen(100.0 + 2 * PACED_LISTEN_S).cancel
        assert wakeup.next_listen() < 100.0 + 2 * PACED_LISTEN_S + 0.1
    finally:
        os.close(fd)
