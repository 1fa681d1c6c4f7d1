"""Stateful sessions: a recurrent state kept on the server between requests, so a client can feed a sequence a
few steps at a time. A session closes when deleted or after ``idle_timeout_s`` seconds without a step; at most
``max_sessions`` are open at once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class SessionError(Exception):
    """A session request that cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    """One client's state. ``state`` is only read or replaced in the model thread, while ``busy``."""

    id: str
    state: Any
    last_used: float
    steps: int = 0
    busy: bool = field(default=False, repr=False)


class SessionStore:
    """The open sessions, by id. Not thread-safe: used from the server's event loop only."""

    def __init__(self, max_sessions: int, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def expire(self) -> int:
        """Close the sessions idle for longer than ``idle_timeout_s`` (never one running a step); how many."""
        now = self.clock()
        idle = [s.id for s in self.sessions.values() if not s.busy and now - s.last_used > self.idle_timeout_s]
        for session_id in idle:
            del self.sessions[session_id]
        return len(idle)

    def check_room(self) -> None:
        """Raise 429 when ``max_sessions`` are open (after closing idle ones)."""
        self.expire()
        if len(self.sessions) >= self.max_sessions:
            raise SessionError(
                429,
                f"{len(self.sessions)} sessions are open, the most this server keeps (--max-sessions "
                f"{self.max_sessions}); close one with DELETE /v1/sessions/{{id}} or retry after "
                f"{self.idle_timeout_s:g} s, when idle sessions expire",
            )

    def open(self, state: Any) -> Session:
        self.check_room()
        session = Session(secrets.token_urlsafe(12), state, self.clock())
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session:
        """The open session ``session_id``; 404 when there is none (never opened, deleted or expired)."""
        self.expire()
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(
                404,
                f"no open session {session_id!r}: it was never opened, was deleted, or expired after "
                f"{self.idle_timeout_s:g} s idle; open one with POST /v1/sessions",
            )
        return session

    def close(self, session_id: str) -> None:
        session = self.get(session_id)
        if session.busy:
            raise SessionError(409, f"session {session_id!r} is running a step; delete it when the step ends")
        del self.sessions[session_id]
