"""The sync-daemon owner and its pure plan, against the in-memory kernel daemons."""

from __future__ import annotations

import errno
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from lvsd.ipvs.fake import FakeIpvs
from lvsd.ipvs.memory import MemoryDaemons
from lvsd.model import StartSyncDaemon, StopSyncDaemon, SyncDaemon, SyncState
from lvsd.spec import SyncMode, SyncSettings
from lvsd.syncd import Role, SyncDaemons, adopted, plan, wanted

MASTER, BACKUP = SyncState.MASTER, SyncState.BACKUP


def settings(mode: SyncMode = "both", **kwargs: object) -> SyncSettings:
    return replace(SyncSettings(mode, "eth0", 51), **kwargs)  # type: ignore[arg-type]


def running(*daemons: SyncDaemon) -> tuple[SyncDaemon, ...]:
    return tuple(replace(d, maxlen=d.maxlen or 1472) for d in daemons)


@pytest.mark.parametrize(("mode", "role", "states"), [
    ("both", "master", {MASTER, BACKUP}), ("both", "backup", {MASTER, BACKUP}),
    ("both", "unknown", {MASTER, BACKUP}), ("follow-role", "master", {MASTER}),
    ("follow-role", "backup", {BACKUP}), ("follow-role", "unknown", {BACKUP}),
    ("off", "master", set()), ("external", "master", set()),
])
def test_each_mode_wants_its_daemons_for_each_role(mode: SyncMode, role: Role,
                                                   states: set[SyncState]) -> None:
    assert set(wanted(settings(mode), role)) == states


def test_both_starts_master_and_backup_and_then_wants_nothing_more() -> None:
    s = settings("both")
    first = plan(s, "backup", (), frozenset())
    assert first.ops == (StartSyncDaemon(s.daemon(MASTER)), StartSyncDaemon(s.daemon(BACKUP)))
    assert first.owned == {MASTER, BACKUP}
    again = plan(s, "backup", running(s.daemon(MASTER), s.daemon(BACKUP)), first.owned)
    assert again.ops == () and again.owned == {MASTER, BACKUP}


def test_follow_role_starts_the_wanted_daemon_before_it_stops_the_other() -> None:
    s = settings("follow-role")
    swap = plan(s, "master", running(s.daemon(BACKUP)), frozenset({BACKUP}))
    assert swap.ops == (StartSyncDaemon(s.daemon(MASTER)), StopSyncDaemon(BACKUP))
    assert swap.owned == {MASTER}
    back = plan(s, "backup", running(s.daemon(MASTER)), swap.owned)
    assert back.ops == (StartSyncDaemon(s.daemon(BACKUP)), StopSyncDaemon(MASTER))


def test_a_daemon_stopped_behind_lvsds_back_is_started_again() -> None:
    s = settings("both")
    repaired = plan(s, "master", running(s.daemon(MASTER)), frozenset({MASTER, BACKUP}))
    assert repaired.ops == (StartSyncDaemon(s.daemon(BACKUP)),)


def test_off_stops_only_what_lvsd_started() -> None:
    foreign = SyncDaemon(BACKUP, "eth1", 9)
    s = settings("off")
    done = plan(s, "master", running(settings().daemon(MASTER), foreign), frozenset({MASTER}))
    assert done.ops == (StopSyncDaemon(MASTER),)
    assert done.owned == frozenset()


def test_external_touches_nothing_whatever_runs() -> None:
    s = settings("external")
    assert plan(s, "master", running(SyncDaemon(MASTER, "eth9", 1)), frozenset({MASTER})).ops \
        == ()
    assert adopted(s, "master", running(s.daemon(MASTER))) == frozenset()


def test_a_daemon_with_other_parameters_in_a_wanted_state_is_replaced() -> None:
    s = settings("both", syncid=7)
    other = SyncDaemon(MASTER, "eth0", 51)
    done = plan(s, "master", running(other, s.daemon(BACKUP)), frozenset())
    assert done.ops == (StopSyncDaemon(MASTER), StartSyncDaemon(s.daemon(MASTER)))


def test_at_start_only_a_daemon_exactly_as_wanted_is_taken_as_lvsds() -> None:
    s = settings("both", maxlen=1400)
    mine = replace(s.daemon(MASTER))
    theirs = SyncDaemon(BACKUP, "eth0", 51, maxlen=1472)  # another size than wanted
    assert adopted(s, "master", (mine, theirs)) == {MASTER}


def test_maxlen_left_to_the_kernel_takes_whatever_size_it_chose() -> None:
    wanted_daemon = SyncDaemon(MASTER, "eth0", 1)
    assert wanted_daemon.satisfied_by(replace(wanted_daemon, maxlen=1472))
    assert not replace(wanted_daemon, maxlen=1400).satisfied_by(
        replace(wanted_daemon, maxlen=1472))
    assert not wanted_daemon.satisfied_by(replace(wanted_daemon, group=IPv4Address("239.0.0.1")))


async def test_the_owner_runs_the_plan_and_reports_what_the_kernel_runs() -> None:
    backend = FakeIpvs()
    errors: list[tuple[str, int]] = []
    owner = SyncDaemons(backend, settings("both"), on_error=lambda n, c: errors.append((n, c)))

    await owner.reconcile("master")

    assert [d.state for d in owner.status.running] == [MASTER, BACKUP]
    assert owner.status.to_json()["daemons"][0]["owner"] == "lvsd"  # type: ignore[index]
    assert errors == []
    backend.sync.running.pop(BACKUP)  # ipvsadm --stop-daemon backup
    await owner.reconcile("master")
    assert [d.state for d in owner.status.running] == [MASTER, BACKUP]


async def test_kernel_refusals_are_logged_counted_shown_and_retried_never_raised() -> None:
    backend = FakeIpvs()
    backend.sync = MemoryDaemons(interfaces=frozenset({"eth1"}))
    errors: list[tuple[str, int]] = []
    owner = SyncDaemons(backend, settings("both"), on_error=lambda n, c: errors.append((n, c)))

    await owner.reconcile("master")
    assert errors == [("start_sync_daemon", errno.ENODEV)] * 2
    assert owner.owned == frozenset()
    assert "no interface 'eth0'" in (owner.status.last_error or "")

    backend.sync = MemoryDaemons()
    backend.sync.mixed_family = True
    await owner.reconcile("master")
    assert errors[-1] == ("start_sync_daemon", errno.EINVAL)

    backend.sync.mixed_family = False
    await owner.reconcile("master")
    assert owner.owned == {MASTER, BACKUP}
    assert owner.status.to_json()["errors"] == 4


async def test_a_foreign_daemon_in_the_way_is_replaced_and_eexist_is_reported() -> None:
    backend = FakeIpvs()
    owner = SyncDaemons(backend, settings("follow-role"))
    await owner.reconcile("backup")
    # Someone else starts a master meanwhile; lvsd's swap meets EEXIST only if it raced.
    backend.sync.running[MASTER] = SyncDaemon(MASTER, "eth0", 51, maxlen=1472)
    await owner.reconcile("master")
    assert [d.state for d in owner.status.running] == [MASTER]
    assert owner.owned == {MASTER}


async def test_an_unreadable_kernel_is_counted_and_the_next_pass_recovers() -> None:
    backend = FakeIpvs()
    backend.daemons_error = OSError(errno.EPERM, "not permitted")
    errors: list[tuple[str, int]] = []
    owner = SyncDaemons(backend, settings("both"), on_error=lambda n, c: errors.append((n, c)))
    assert await owner.reconcile("master") == ()
    assert errors == [("get_sync_daemons", errno.EPERM)]
    backend.daemons_error = None
    assert len(await owner.reconcile("master")) == 2


async def test_without_a_sync_backend_the_owner_does_nothing() -> None:
    owner = SyncDaemons(None, settings("both"))
    assert await owner.reconcile("master") == ()
    assert owner.status.to_json()["daemons"] == []
