"""Messages among the processes of one atlas job, and which of them are gone.

Process 0 (the hub) listens on the job's port; every other process connects
(retrying until the hub is up) and says hello; once all have, or the
start-up time has passed, the hub tells each who is in (the *roster*, with a
random id for the job). From then on a message any process sends
goes to the hub, which delivers it to itself and relays it to every other
process, so each process sees the same messages in the same order (the
hub's). A process is gone when its connection closes (a kill closes it at
once) or falls silent for ``silence`` seconds (its host died; every
connection carries a beat every ``beat`` seconds, at most a quarter of
``silence``); the hub tells the others.
A process that loses the hub is *cut off*: it learns nothing more of the
others, and counts the hub gone.

The wire format is JSON lines. Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

BEAT = 5.0  # seconds between beats on every connection
SILENCE = 60.0  # a connection silent this long is lost
_PROTOCOL = "classgen_jax atlas job 1"


class BusError(RuntimeError):
  """The job's processes could not reach each other."""


class _Link:
  """One connection: lines out under a lock, lines in on a reader thread."""

  def __init__(self, sock: socket.socket, silence: float):
    self.sock, self._lock, self._buffer = sock, threading.Lock(), b""
    sock.settimeout(silence)

  def send(self, message: dict[str, Any]) -> bool:
    data = (json.dumps(message) + "\n").encode()
    try:
      with self._lock:
        self.sock.sendall(data)
      return True
    except OSError:
      return False

  def receive(self) -> dict[str, Any] | None:
    """The next message (beats skipped), or None once the link is lost."""
    while True:
      while b"\n" not in self._buffer:
        try:
          data = self.sock.recv(65536)
        except OSError:  # silent too long, or reset
          return None
        if not data:
          return None
        self._buffer += data
      line, self._buffer = self._buffer.split(b"\n", 1)
      try:
        message = json.loads(line)
      except ValueError:
        return None
      if message.get("kind") != "beat":
        return message

  def news(self) -> tuple[list[dict[str, Any]], set[int]]:
    """Copies of ``inbox`` and ``gone``, taken together."""
    with self._cond:
      return list(self.inbox), set(self.gone)

  def close(self) -> None:
    with contextlib.suppress(OSError):
      self.sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
      self.sock.close()


class Bus:
  """This process's end of the job's messages (see the module docstring).

  Attributes:
    index, count: this process and the job's number of processes.
    token: the job's id (from the roster).
    who: each process's ``{"host", "pid"}`` (from its hello).
    inbox: every message delivered here, in the hub's order; each has
      ``kind`` and ``from`` (the sender's index).
    gone: the processes known to be gone.
    cut_off: whether this process lost the hub.
  """

  def __init__(self, index: int, count: int, *, beat: float = BEAT, silence: float = SILENCE):
    self.index, self.count, self.token = index, count, ""
    # A link is lost after ``silence`` seconds without a line: at least four
    # beats come in that time, whatever silence a job sets.
    self.beat, self.silence = min(beat, silence / 4), silence
    self.who: dict[int, dict[str, Any]] = {index: {"host": socket.gethostname(),
                                                   "pid": os.getpid()}}
    self.inbox: list[dict[str, Any]] = []
    self.gone: set[int] = set()
    self.cut_off = False
    self._links: dict[int, _Link] = {}
    self._cond = threading.Condition()
    self._relaying = threading.RLock()
    self._closed = threading.Event()
    self._listener: socket.socket | None = None
    self.port = 0  # the hub's

  # -- starting ---------------------------------------------------------------

  @classmethod
  def listen(cls, count: int, port: int = 0, **kwargs) -> Bus:
    """The hub (process 0), listening on ``port`` (0: a free one) of every interface.

    Raises:
      BusError: the port is taken.
    """
    bus = cls(0, count, **kwargs)
    bus.token = secrets.token_hex(8)
    dual = socket.has_dualstack_ipv6()
    try:
      bus._listener = socket.create_server(
          ("", port), family=socket.AF_INET6 if dual else socket.AF_INET, dualstack_ipv6=dual)
    except OSError as error:
      raise BusError(f"process 0 cannot listen on port {port} ({error.strerror or error}): "
                     "give --coordinator a free port") from None
    bus.port = bus._listener.getsockname()[1]
    return bus

  def admit(self, timeout: float) -> None:
    """Hub: lets the other processes in until all have said hello or
    ``timeout`` passes (those missing are gone), then tells every process
    who is in."""
    deadline = time.monotonic() + timeout
    listener, self._listener = self._listener, None
    while len(self._links) < self.count - 1 and time.monotonic() < deadline:
      listener.settimeout(max(0.01, min(1.0, deadline - time.monotonic())))
      try:
        sock, _ = listener.accept()
      except (TimeoutError, OSError):
        continue
      link = _Link(sock, min(10.0, self.silence))
      hello = link.receive()
      index = hello.get("from") if isinstance(hello, dict) else None
      if (not hello or hello.get("kind") != "hello" or hello.get("protocol") != _PROTOCOL
          or hello.get("count") != self.count or not isinstance(index, int)
          or not 0 < index < self.count or index in self._links):
        link.close()
        continue
      link.sock.settimeout(self.silence)
      self.who[index] = {"host": hello.get("host"), "pid": hello.get("pid")}
      self._links[index] = link
    listener.close()
    self.gone = set(range(1, self.count)) - set(self._links)
    roster = {"kind": "roster", "from": 0, "who": {str(i): w for i, w in self.who.items()},
              "gone": sorted(self.gone), "job": self.token}
    # Every process hears the roster before any message: a reader started
    # before the last roster went out could relay a process's first message
    # to one still waiting for its roster, which took it for a refusal.
    for link in self._links.values():
      link.send(roster)
    for index, link in list(self._links.items()):
      threading.Thread(target=self._read, args=(index, link), daemon=True,
                       name=f"atlas-job-{index}").start()
    threading.Thread(target=self._beat, daemon=True, name="atlas-job-beat").start()

  @classmethod
  def join(cls, host: str, port: int, index: int, count: int, *, timeout: float,
           **kwargs) -> Bus:
    """A process other than the hub: connects (retrying until ``timeout``),
    says hello and waits to be told who is in (until the hub's own start-up
    time has passed too: ``timeout`` more).

    Raises:
      BusError: the hub could not be reached, or did not let this process in.
    """
    bus = cls(index, count, **kwargs)
    deadline, error = time.monotonic() + timeout, None
    while True:
      try:
        sock = socket.create_connection((host, port), timeout=max(1.0, deadline - time.monotonic()))
        if sock.getsockname() == sock.getpeername():
          # TCP's simultaneous open: while nothing listens on the hub's port,
          # a connection that the kernel gives that same port as its own
          # connects to itself (and would read its own hello back).
          sock.close()
          raise ConnectionRefusedError("connected to itself; the hub is not up yet")
        break
      except OSError as failure:
        error = failure
        if time.monotonic() > deadline:
          raise BusError(f"could not reach process 0 at {host}:{port} in {timeout:.0f} s "
                         f"({error.strerror or error}): start process 0 (the coordinator) "
                         "and check that the port is open between the hosts") from None
        time.sleep(0.2)
    link = _Link(sock, timeout + 10)
    link.send({"kind": "hello", "from": index, "protocol": _PROTOCOL, "count": count,
               **bus.who[index]})
    roster = link.receive()
    if not roster or roster.get("kind") != "roster":
      link.close()
      raise BusError(f"process 0 at {host}:{port} did not let process {index} in (another "
                     "--num_processes, or it stopped waiting for this process)")
    link.sock.settimeout(bus.silence)
    bus.who.update((int(i), w) for i, w in roster["who"].items())
    bus.gone, bus.token = set(roster["gone"]), roster["job"]
    bus._links[0] = link
    threading.Thread(target=bus._read, args=(0, link), daemon=True, name="atlas-job-0").start()
    threading.Thread(target=bus._beat, daemon=True, name="atlas-job-beat").start()
    return bus

  # -- messages ---------------------------------------------------------------

  def send(self, kind: str, **fields: Any) -> None:
    """Sends a message to every process (this one included)."""
    message = {"kind": kind, "from": self.index, **fields}
    if self.index == 0:
      self._relay(message)
      return
    sent = not self.cut_off and self._links[0].send(message)
    if not sent:
      self._lost(0)
      with self._cond:  # no hub: it is news to this process only
        self.inbox.append(message)
        self._cond.notify_all()

  def wait(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
    """Waits until ``ready()`` (evaluated under the bus's lock) or ``timeout``;
    a Ctrl-C lands at once. Returns ``ready()``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with self._cond:
      while not ready():
        left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if left <= 0:
          return False
        self._cond.wait(left)
      return True

  def gather(self, name: str, value: Any) -> dict[int, Any] | None:
    """Every live process's ``value`` for ``name`` (a barrier that the gone
    do not hold up): the same mapping in every process, or None when cut off."""
    self.send("gather", name=name, value=value)

    def values():
      return {m["from"]: m["value"] for m in self.inbox
              if m["kind"] == "gather" and m.get("name") == name}

    self.wait(lambda: self.cut_off or all(
        i in self.gone or i in values() for i in range(self.count)))
    return None if self.cut_off else values()

  def news(self) -> tuple[list[dict[str, Any]], set[int]]:
    """Copies of ``inbox`` and ``gone``, taken together."""
    with self._cond:
      return list(self.inbox), set(self.gone)

  def close(self) -> None:
    self._closed.set()
    for link in list(self._links.values()):
      link.close()

  # -- threads ----------------------------------------------------------------

  def _relay(self, message: dict[str, Any]) -> None:
    """Hub: delivers ``message`` here and to every other live process, one
    message at a time, so that every process sees one order; the words of a
    process already gone are dropped (its ``gone`` came first)."""
    lost = []
    with self._relaying:
      if message["kind"] != "gone" and message["from"] in self.gone:
        return
      with self._cond:
        self.inbox.append(message)
        self._cond.notify_all()
      for index, link in self._links.items():
        if index not in self.gone and not link.send(message):
          lost.append(index)
      for index in lost:
        self._lost(index)

  def _read(self, index: int, link: _Link) -> None:
    while (message := link.receive()) is not None:
      if self.index == 0:
        self._relay({**message, "from": index})
        continue
      with self._cond:
        if message.get("kind") == "gone":
          self.gone.add(message["who"])
        self.inbox.append(message)
        self._cond.notify_all()
    self._lost(index)

  def _lost(self, index: int) -> None:
    """``index`` is gone (the hub, for a process other than the hub)."""
    with self._relaying:
      with self._cond:
        if index in self.gone or self._closed.is_set():
          return
        self.gone.add(index)
        self.cut_off = self.cut_off or self.index != 0
        self._cond.notify_all()
      if self.index == 0:
        self._relay({"kind": "gone", "from": 0, "who": index})

  def _beat(self) -> None:
    while not self._closed.wait(self.beat):
      for index, link in list(self._links.items()):
        if index not in self.gone and not link.send({"kind": "beat"}):
          self._lost(index)
