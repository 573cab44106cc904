"""Several servers of one backend (judge.hosts) as one backend: `HostPool`.

Each request goes to the least busy server that is up; a server that fails (connection,
timeout, 5xx) is left out for a while, its requests go to the others, and it is checked again
(preflight, same digest) before it gets new ones. Preflight goes on with the servers that
answer (and says which do not) and insists that they all serve the same weights (same
digest), because scores from two different models must not be mixed in one run.
"""

from __future__ import annotations

import sys
import threading
import time

from evalpipe.judging.backends.base import (
    JudgeError,
    JudgeIdentity,
    JudgeRequest,
    ModelMissingError,
    Reply,
    UnreachableJudgeError,
)


def one_or_pool(backends: list):
    """The backend itself when there is one server, else a HostPool of them."""
    return backends[0] if len(backends) == 1 else HostPool(backends)


class HostPool:
    """Several servers of one backend, safe to call from many threads.

    Each request goes to the least busy server that is up (fewest requests in flight; among
    equals, the one picked longest ago). A server that cannot be reached (connection refused
    or dropped, timeout: UnreachableJudgeError) is down for `retry_after` seconds and the
    request goes at once to another server; only when every server has failed does the error
    reach the judge stage (which retries with backoff). Other errors (an HTTP 5xx for this
    request) go to the judge stage as they are: its retry goes to whichever server is least
    busy then. After `retry_after` a down server is preflighted again and rejoins only if it
    still serves the same weights. Servers unreachable at preflight start out down.
    """

    RETRY_AFTER = 30.0  # seconds a failed server is left alone

    def __init__(self, backends: list, *, retry_after: float | None = None):
        if not backends:
            raise JudgeError("judge.hosts: no servers given")
        self.backends = list(backends)
        self.retry_after = self.RETRY_AFTER if retry_after is None else retry_after
        self.identity: JudgeIdentity | None = None
        self.max_context: int | None = None
        self._lock = threading.Lock()
        self._in_flight = {id(b): 0 for b in self.backends}
        self._last_turn = {id(b): 0 for b in self.backends}  # when it was last picked
        self._turns = 0
        self._down_until: dict[int, float] = {}  # server -> time it may be tried again
        self._refused: set[int] = set()  # came back with other weights: never again

    def preflight(self) -> JudgeIdentity:
        reachable, unreachable = [], []
        for backend in self.backends:
            try:
                reachable.append((backend, backend.preflight()))
            except UnreachableJudgeError as err:
                unreachable.append((backend, err))
        if not reachable:
            raise unreachable[0][1] if len(unreachable) == 1 else JudgeError(
                "cannot reach any judge host: "
                + ", ".join(backend.url for backend, _ in unreachable))
        first_backend, first = reachable[0]
        for backend, identity in reachable[1:]:
            if identity != first:
                raise JudgeError(
                    f"judge hosts serve different models: {first_backend.url} has "
                    f"{first.model} ({first.digest}), {backend.url} has "
                    f"{identity.model} ({identity.digest}); give servers with the same weights")
        if unreachable:
            print(f"judge: going on with {len(reachable)} of {len(self.backends)} hosts; "
                  "not reachable (tried again later): "
                  + ", ".join(backend.url for backend, _ in unreachable), file=sys.stderr)
            later = time.monotonic() + self.retry_after
            for backend, _ in unreachable:
                self._down_until[id(backend)] = later
        self.identity = first
        self.max_context = first_backend.max_context
        return first

    def pull(self) -> None:
        """Pull the judge model into every reachable host that lacks it (judge.pull)."""
        for backend in self.backends:
            try:
                backend.preflight()
            except ModelMissingError:
                backend.pull()
            except UnreachableJudgeError:
                pass  # preflight says so, and the pool goes on without it

    def _pick(self, tried: set[int]):
        """(server, returning): the least busy server not yet tried for this request that
        is up or whose time out is over (returning: it must be checked first); when every
        server is down and none was tried yet, the one due back first. (None, False) when
        there is none."""
        now = time.monotonic()
        with self._lock:
            usable = [b for b in self.backends if id(b) not in tried
                      and id(b) not in self._refused]
            candidates = [b for b in usable if self._down_until.get(id(b), 0.0) <= now]
            if not candidates and usable and not tried:
                # Every server is down: the judge stage's retry tries the one back first.
                candidates = [min(usable, key=lambda b: self._down_until[id(b)])]
            if not candidates:
                return None, False
            backend = min(candidates,
                          key=lambda b: (self._in_flight[id(b)], self._last_turn[id(b)]))
            returning = id(backend) in self._down_until
            if returning:  # nobody else checks it meanwhile
                self._down_until[id(backend)] = now + self.retry_after
            self._in_flight[id(backend)] += 1
            self._turns += 1
            self._last_turn[id(backend)] = self._turns
            return backend, returning

    def _rejoins(self, backend) -> bool:
        """A server back from a failure serves again only with the weights of the run."""
        try:
            identity = backend.preflight()
        except JudgeError:
            return False
        if identity != self.identity:
            with self._lock:
                self._refused.add(id(backend))
            print(f"judge: host {backend.url} now serves {identity.model} ({identity.digest}), "
                  f"not {self.identity.model} ({self.identity.digest}): no longer asked",
                  file=sys.stderr)
            return False
        with self._lock:
            self._down_until.pop(id(backend), None)
        return True

    def ask(self, request: JudgeRequest) -> Reply:
        tried: set[int] = set()
        last_error: UnreachableJudgeError | None = None
        while True:
            backend, returning = self._pick(tried)
            if backend is None:
                raise last_error or UnreachableJudgeError(
                    "no judge host is up: " + ", ".join(b.url for b in self.backends))
            tried.add(id(backend))
            try:
                if returning and not self._rejoins(backend):
                    continue
                return backend.ask(request)
            except UnreachableJudgeError as err:
                last_error = err
                with self._lock:
                    self._down_until[id(backend)] = time.monotonic() + self.retry_after
            finally:
                with self._lock:
                    self._in_flight[id(backend)] -= 1

    def close(self) -> None:
        for backend in self.backends:
            backend.close()

