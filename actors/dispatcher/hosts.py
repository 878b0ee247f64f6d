"""The Dispatcher's view of executor hosts: who serves which task types, with what capacity.

Pure bookkeeping, no sockets: the Dispatcher feeds it hello/heartbeat messages and asks it where
a task can run and which hosts fell silent (lost after ``liveness`` missed heartbeats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.kinds_run import HostInfo


@dataclass(slots=True)
class Host:
    identity: bytes
    host_id: str
    task_types: frozenset[str]
    capacity: int
    last_seen: float
    running: set[int] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


class HostTable:
    def __init__(self, heartbeat_s: float = 1.0, liveness: int = 3) -> None:
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self._hosts: dict[bytes, Host] = {}
        self._by_task: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def hello(
        self, identity: bytes, host_id: str, types: list[str], capacity: int, now: float
    ) -> Host:
        old = self._hosts.get(identity)
        host = Host(identity, host_id, frozenset(types), max(1, capacity), now)
        if old is not None:
            host.running = old.running
        self._hosts[identity] = host
        return host

    def seen(self, identity: bytes, now: float) -> bool:
        host = self._hosts.get(identity)
        if host is None:
            return False
        host.last_seen = now
        return True

    def known(self, identity: bytes) -> bool:
        return identity in self._hosts

    def serves(self, task_type: str) -> bool:
        return any(task_type in h.task_types for h in self._hosts.values())

    def pick(self, task_type: str) -> Host | None:
        """The host serving ``task_type`` with the most free capacity, if any has room."""
        best: Host | None = None
        for host in self._hosts.values():
            if (
                task_type in host.task_types
                and host.free > 0
                and (best is None or host.free > best.free)
            ):
                best = host
        return best

    def describe(self) -> list[HostInfo]:
        """Every host, by host id: what it serves, its capacity and how much of it is busy."""
        return [
            HostInfo(h.host_id, sorted(h.task_types), h.capacity, len(h.running))
            for h in sorted(self._hosts.values(), key=lambda h: h.host_id)
        ]

    def room(self) -> int:
        return sum(max(0, h.free) for h in self._hosts.values())

    def has_room(self) -> bool:
        return any(h.free > 0 for h in self._hosts.values())

    def assign(self, host: Host, task_id: int) -> None:
        host.running.add(task_id)
        self._by_task[task_id] = host.identity

    def release(self, task_id: int) -> bytes | None:
        identity = self._by_task.pop(task_id, None)
        if identity is not None and identity in self._hosts:
            self._hosts[identity].running.discard(task_id)
        return identity

    def tasks_of(self, identity: bytes) -> set[int]:
        host = self._hosts.get(identity)
        return set(host.running) if host is not None else set()

    def host_of(self, task_id: int) -> bytes | None:
        return self._by_task.get(task_id)

    def lost(self, now: float) -> list[Host]:
        """Remove and return hosts silent for ``liveness`` heartbeat intervals."""
        limit = self.heartbeat_s * self.liveness
        gone = [h for h in self._hosts.values() if now - h.last_seen > limit]
        for host in gone:
            del self._hosts[host.identity]
            for task_id in host.running:
                self._by_task.pop(task_id, None)
        return gone

    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def identities(self) -> list[bytes]:
        return list(self._hosts)
