"""The MAVLink link: the one object that hides pymavlink (heartbeats, commands, signing, send and receive).

Wire protocol: MAVLink 2 through dreamlink's own dialect (`firmware_bridge/dialect`: pymavlink's
generator run on the ~20 messages the link and the profiles use, copied from common.xml and
ardupilotmega.xml, so ids and CRCs are the autopilots'). pymavlink's `ardupilotmega` module would
cost 4-5 MB more of an onboard process's 80, for ~300 messages nobody here reads. Not pymavlink's
`mavutil` either: it loads the MAVLink 1 and 2 "all" dialects (19 MB), and its connection classes
print, spin on a closed TCP peer and switch a process-wide dialect under the receive thread; the
transports (`transports`, which also lists the connect strings) are the few socket and serial calls
it made for us. Offline readers of logs from any autopilot (`tlog`) use the "all" dialect; ids are shared.

Threads: `open()` starts a receive thread that parses continuously, keeps the newest message of
each type with its receive time, feeds subscribers and waiters and counts; and a heartbeat thread
(HEARTBEAT MAV_TYPE_ONBOARD_CONTROLLER / MAV_AUTOPILOT_INVALID every `heartbeat_period_s`; 0 turns
it off). Sending is serialised by a lock, so any thread may send through `mav`; a transport that
cannot send (no TCP client yet, an unplugged port) drops the frame with a rate-limited warning.

Receiving: what arrives passes `admission.FrameAdmission`, the rule the SITL vehicles apply too:
malformed data (garbage, CRC failures, a frame cut short at a UDP datagram's end) is dropped and
counted in `rx_bad`; frames with ids this dialect does not decode (an autopilot streams dozens of
types) are counted in `rx_unknown` and go to the tap byte for byte, so a .tlog holds everything that
arrived, after the same CRC (when pymavlink knows the id), signature, replay and source checks as
any frame. They never reach subscribers, waiters or `latest()`: nothing acts on a message it cannot
read. Rejected frames are counted (`rx_unsigned_rejected`, `rx_bad_signature`, `rx_replayed`,
`rx_source_rejected`) and never reach subscribers, waiters, `latest()` or the tap. Nothing received
ever kills the receive thread; a TCP peer that hangs up is logged (and a listening TCP link waits for
the next client).

Security (`security` has the signing details and the why, `admission` the policy):
- Signing: with `signing_key_file` set, every frame sent is signed (MAVLink 2 signing through
  pymavlink's signer, link id `link_id`, timestamp kept at least at wall-clock time) and a frame
  received is delivered only if its signature is good and newer than its stream's last one; an
  unsigned frame only if it is RADIO_STATUS or `accept_unsigned` is on and it is no command.
  With signing on, only a signed frame makes its sender a peer of a listening UDP link, so a
  spoofer cannot make us talk to it. Duplicated or reordered signed frames are replays by the
  spec's rule: dropped and counted.
- Sources: with `allowed_sources` set, command messages (COMMAND_LONG/INT, SET_*, parameter and
  mission writes...) from any other (system, component) are dropped; telemetry from anyone still flows.
- The key is read once at `open()` from a file only its owner can access and never logged;
  SETUP_SIGNING frames (which carry keys) never reach the tap, so never a .tlog.

Time: receive times are `time.monotonic()` seconds (immune to wall-clock steps, comparable with
the runtime's clock); the `tap` gets `time.time()` because a .tlog stamps frames with Unix time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from dreamlink.firmware_bridge.admission import (
    Admission,
    AdmissionCounts,
    FrameAdmission,
    RateLimitedLog,
    command_message_ids,
)
from dreamlink.firmware_bridge.dialect import dreamlink_v20 as _dialect
from dreamlink.firmware_bridge.dialect.known_ids import KNOWN_IDS
from dreamlink.firmware_bridge.security import (
    SETUP_SIGNING_ID,
    Authenticator,
    SigningKey,
    SigningKeyError,
    Verdict,
    load_signing_key,
    signing_timestamp,
)
from dreamlink.firmware_bridge.transports import Address, Transport, TransportError, Udp, open_transport

mavlink: Any = _dialect  # the dialect module: message classes, MAV_* constants, enums

# The dialect module speaks MAVLink 2 whatever MAVLINK20 says; the variable is for a `mavutil` user
# in the same process (a test, an in-process simulator), which otherwise picks MAVLink 1 and cannot
# decode the v2-only messages a link sends (DEBUG_FLOAT_ARRAY, COMMAND_ACK's target fields).
os.environ.setdefault("MAVLINK20", "1")

log = logging.getLogger(__name__)

Tap = Callable[[str, float, bytes], None]
_SELECT_S = 0.1  # receive-thread poll: bounds how long close() waits for it
_PEER_TIMEOUT_S = 5.0  # a listening link stops sending to an address silent this long (unless it is the only one)


class LinkError(RuntimeError):
    """The link cannot be opened or used; the message says which connect string and why."""


class LinkTimeout(LinkError, TimeoutError):
    """No answer in time (a heartbeat, a COMMAND_ACK); the message names what was awaited."""


class CommandRefused(LinkError):
    """A COMMAND_LONG was answered with a result other than MAV_RESULT_ACCEPTED."""

    def __init__(self, command: int, result: int, context: str = "") -> None:
        self.command, self.result = command, result
        suffix = f": {context}" if context else ""
        super().__init__(f"{command_name(command)} refused with {result_name(result)}{suffix}")


def command_name(command: int) -> str:
    entry = mavlink.enums["MAV_CMD"].get(command)
    return f"{entry.name} ({command})" if entry is not None else f"MAV_CMD {command}"


def result_name(result: int) -> str:
    entry = mavlink.enums["MAV_RESULT"].get(result)
    return entry.name if entry is not None else f"MAV_RESULT {result}"


@dataclass(frozen=True)
class LinkConfig:
    """Where and as whom to talk MAVLink. `transports` lists the connect strings."""

    connect: str
    source_system: int = 1
    source_component: int = 191  # MAV_COMP_ID_ONBOARD_COMPUTER
    heartbeat_period_s: float = 1.0
    signing_key_file: str = ""  # "" = no signing; else a 32-byte key file only its owner can read
    link_id: int = 0  # MAVLink signing link id of this link (0..255)
    accept_unsigned: bool = False  # with signing on: deliver unsigned telemetry (never unsigned commands)
    allowed_sources: tuple[tuple[int, int], ...] = ()  # (sysid, compid) whose commands we accept; () = any

    def __post_init__(self) -> None:
        if not isinstance(self.connect, str) or not self.connect.strip():
            raise ValueError(f"LinkConfig.connect: expected a connect string like udp:127.0.0.1:14540, "
                             f"got {self.connect!r}")
        if not 1 <= self.source_system <= 255:
            raise ValueError(f"LinkConfig.source_system: expected 1..255, got {self.source_system!r}")
        if not 1 <= self.source_component <= 255:
            raise ValueError(f"LinkConfig.source_component: expected 1..255, got {self.source_component!r}")
        if not (math.isfinite(self.heartbeat_period_s) and self.heartbeat_period_s >= 0):
            raise ValueError(f"LinkConfig.heartbeat_period_s: expected seconds >= 0 (0 = off), "
                             f"got {self.heartbeat_period_s!r}")
        if not isinstance(self.signing_key_file, str):
            raise ValueError(f"LinkConfig.signing_key_file: expected a path string (\"\" = no signing), "
                             f"got {type(self.signing_key_file).__name__}")
        if isinstance(self.link_id, bool) or not isinstance(self.link_id, int) or not 0 <= self.link_id <= 255:
            raise ValueError(f"LinkConfig.link_id: expected 0..255, got {self.link_id!r}")
        if not isinstance(self.accept_unsigned, bool):
            raise ValueError(f"LinkConfig.accept_unsigned: expected true or false, got {self.accept_unsigned!r}")
        object.__setattr__(self, "allowed_sources", _parse_sources(self.allowed_sources))


def _parse_sources(value: Any) -> tuple[tuple[int, int], ...]:
    """Normalise allowed_sources (a TOML file gives lists of lists) and check every id."""
    expected = "a list of [system_id, component_id] pairs, system 1..255, component 0..255"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"LinkConfig.allowed_sources: expected {expected}, got {value!r}")
    pairs = []
    for item in value:
        if (isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                or not 1 <= item[0] <= 255 or not 0 <= item[1] <= 255):
            raise ValueError(f"LinkConfig.allowed_sources: expected {expected}, got the entry {item!r}")
        pairs.append((int(item[0]), int(item[1])))
    return tuple(pairs)


@dataclass(frozen=True)
class LinkStats:
    """Counters since `open()` (a snapshot)."""

    rx_frames: int = 0  # decoded frames of known types
    rx_bad: int = 0  # malformed or garbage chunks dropped
    rx_unknown: int = 0  # well-formed frames with ids this dialect does not decode: logged, not delivered
    tx_frames: int = 0
    rx_signed: int = 0  # delivered frames whose signature was checked good (signing on)
    rx_unsigned_rejected: int = 0  # signing on: unsigned frames the policy does not allow, dropped
    rx_bad_signature: int = 0  # signing on: signature does not match our key, dropped
    rx_replayed: int = 0  # signing on: good signature but not newer than its stream (replay, duplicate), dropped
    rx_source_rejected: int = 0  # command messages from ids not in allowed_sources, dropped
    rx_by_type: dict[str, int] = field(default_factory=dict)


@dataclass
class _RxCounts(AdmissionCounts):
    """What the receive side counted (the admission counts here, under the link's lock); `stats` copies it."""

    rx_source_rejected: int = 0


class _Waiter:
    __slots__ = ("event", "msg", "predicate")

    def __init__(self, predicate: Callable[[Any], bool] | None) -> None:
        self.predicate = predicate
        self.event = threading.Event()
        self.msg: Any = None


class _Writer:
    """What pymavlink's encoder writes packed frames to (its `file`)."""

    __slots__ = ("write",)

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


class Link:
    """A MAVLink connection with a receive thread, a heartbeat thread and the newest message per type."""

    def __init__(self, config: LinkConfig, tap: Tap | None = None) -> None:
        self.config = config
        self._tap = tap
        self._transport: Transport | None = None
        self._mav: Any = None  # pymavlink's encoder, writing through `_write`
        self._admission: FrameAdmission | None = None  # what arrives: parsing, checks, counting (made by open())
        self._lock = threading.Lock()  # newest-message table, counters, subscribers, waiters
        self._send_lock = threading.Lock()  # pymavlink's encoder (sequence numbers) is not thread-safe
        self._latest: dict[str, tuple[Any, float]] = {}
        self._subscribers: dict[str, tuple[Callable[[Any, float], None], ...]] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._rx = _RxCounts()
        self._tx_frames = 0
        # Every id pymavlink knows, not only the decoded ones: an undecoded command still needs a signature.
        self._policy = Admission(command_message_ids({i: name for i, (name, _) in KNOWN_IDS.items()}),
                                 config.accept_unsigned, config.allowed_sources)
        self._auth: Authenticator | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warnings = RateLimitedLog(log)  # garbage arrives at line rate; counters keep totals
        self._udp_server = False
        # Listening UDP: every address that sent valid (and, with signing, signed) MAVLink recently, with
        # when; what we send goes to all of them, like any MAVLink UDP server endpoint (a vehicle and a
        # ground station on one port both hear us).
        self._peers: dict[tuple[str, int], float] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> Link:
        if self._transport is not None:
            raise LinkError(f"link {self.config.connect!r}: already open")
        key = self._load_key()  # before the socket: a bad key file must not leave a half-open link
        try:
            transport = open_transport(self.config.connect)
        except TransportError as exc:
            raise LinkError(str(exc)) from exc.__cause__
        mav = mavlink.MAVLink(_Writer(self._write), srcSystem=self.config.source_system,
                              srcComponent=self.config.source_component)
        mav.robust_parsing = True
        if key is not None:
            # pymavlink signs every frame the encoder packs; receiving is checked by our Authenticator.
            mav.signing.secret_key = key.secret
            mav.signing.sign_outgoing = True
            mav.signing.allow_unsigned_callback = None
            mav.signing.link_id = self.config.link_id
            mav.signing.timestamp = signing_timestamp(time.time())
            self._auth = Authenticator(key)
        # A listening UDP link sends to the addresses that sent valid (signed, when signing is on)
        # MAVLink recently, not to every address that ever sent it a datagram (garbage included).
        self._udp_server = transport.server
        # Undecoded frames pass (checked like any other) to the tap, so a .tlog holds all that arrived.
        self._admission = FrameAdmission(mavlink, self._policy, self._rx, self._warnings,
                                         authenticator=self._auth, datagrams=transport.datagrams,
                                         pass_undecoded=True, lock=self._lock, where=f" on {self.config.connect}")
        mav.send = self._send  # every *_send() of the encoder goes through the lock and the tap
        self._mav = mav
        self._transport = transport
        self._stop.clear()
        self._threads = [threading.Thread(target=self._rx_loop, name=f"mavlink-rx {self.config.connect}", daemon=True)]
        if self.config.heartbeat_period_s > 0:
            self._threads.append(threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                  name=f"mavlink-heartbeat {self.config.connect}"))
        for thread in self._threads:
            thread.start()
        log.info("link open on %s as %d/%d%s", self.config.connect, self.config.source_system,
                 self.config.source_component,
                 f", signing with key {key.key_id} (link id {self.config.link_id})" if key is not None else "")
        return self

    def _load_key(self) -> SigningKey | None:
        if not self.config.signing_key_file:
            return None
        try:
            return load_signing_key(self.config.signing_key_file)
        except SigningKeyError as exc:
            raise LinkError(f"link {self.config.connect!r}: LinkConfig.signing_key_file: {exc}") from None

    @property
    def signing(self) -> bool:
        """True when this link signs what it sends and checks signatures on what it receives."""
        return self._auth is not None

    def close(self) -> None:
        if self._transport is None:
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        try:
            self._transport.close()
        except Exception as exc:
            log.debug("closing %s: %s", self.config.connect, exc)
        self._transport = None
        with self._lock:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.event.set()

    def __enter__(self) -> Link:
        return self.open() if self._transport is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    # -- receiving -----------------------------------------------------------------------------

    def subscribe(self, msg_type: str, callback: Callable[[Any, float], None]) -> None:
        """Call `callback(msg, recv_monotonic_s)` from the receive thread for every `msg_type` message.

        Keep it short: it runs on the receive thread; exceptions are logged, not propagated."""
        with self._lock:
            self._subscribers[msg_type] = (*self._subscribers.get(msg_type, ()), callback)

    def unsubscribe(self, msg_type: str, callback: Callable[[Any, float], None]) -> None:
        """Stop calling a `subscribe`d callback (no error if it was not subscribed)."""
        with self._lock:
            self._subscribers[msg_type] = tuple(c for c in self._subscribers.get(msg_type, ()) if c is not callback)

    def latest(self, msg_type: str) -> tuple[Any, float] | None:
        """The newest `msg_type` message and its receive time (monotonic s), or None."""
        with self._lock:
            return self._latest.get(msg_type)

    def wait_for(self, msg_type: str, timeout_s: float, predicate: Callable[[Any], bool] | None = None) -> Any | None:
        """The first `msg_type` message arriving after this call (matching `predicate`), or None on timeout."""
        waiter = self._expect(msg_type, predicate)
        return self._await(msg_type, waiter, timeout_s)

    def _expect(self, msg_type: str, predicate: Callable[[Any], bool] | None) -> _Waiter:
        waiter = _Waiter(predicate)
        with self._lock:
            self._waiters.setdefault(msg_type, []).append(waiter)
        return waiter

    def _await(self, msg_type: str, waiter: _Waiter, timeout_s: float) -> Any | None:
        waiter.event.wait(timeout_s)
        with self._lock:
            waiters = self._waiters.get(msg_type, [])
            if waiter in waiters:
                waiters.remove(waiter)
        return waiter.msg

    def _rx_loop(self) -> None:
        transport = self._transport
        assert transport is not None
        while not self._stop.is_set():
            try:
                if not transport.wait(_SELECT_S):
                    continue
                data, source = transport.read()
            except Exception as exc:  # a closed port, a TCP peer that hung up, an unplugged USB cable
                self._warnings.warning("receive on %s failed: %s", self.config.connect, exc, key="rx")
                self._stop.wait(_SELECT_S)
                continue
            if data:
                self._feed(data, source if self._udp_server else None)

    def _write(self, buf: bytes) -> None:
        """The encoder's output: to the peers of a listening UDP link, else to the transport."""
        transport = self._transport
        if transport is None:
            return
        try:
            if isinstance(transport, Udp) and transport.server:
                self._write_to_peers(transport, buf)
            else:
                transport.write(buf)
        except OSError as exc:  # no TCP client yet, an unplugged port: the frame is lost, like on a radio
            self._warnings.warning("send on %s failed: %s", self.config.connect, exc, key="tx")

    def _write_to_peers(self, transport: Udp, buf: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            peers = [a for a, seen in self._peers.items() if now - seen < _PEER_TIMEOUT_S]
            if not peers and self._peers:  # all quiet: keep answering the most recent one
                peers = [max(self._peers, key=self._peers.__getitem__)]
        for address in peers:
            transport.send_to(buf, address)

    def _feed(self, data: bytes, source: Address | None = None) -> int:
        """Admit one chunk (`admission`) and deliver what passes; returns the number of decoded frames delivered.

        On a listening UDP link, `source` becomes a peer before the first valid frame is
        delivered, so whoever reacts to that frame already answers the right address."""
        assert self._admission is not None, "open() first"
        valid = 0
        for admitted in self._admission.admit(data):
            # A sender becomes a peer by a frame we could check: decoded, or its CRC known (and signed if
            # signing is on), like with a dialect that decodes every message.
            if source is not None and admitted.checked and (self._auth is None or admitted.verdict is Verdict.SIGNED):
                with self._lock:
                    new = source not in self._peers
                    self._peers[source] = time.monotonic()
                if new:
                    log.info("link %s: peer %s:%d", self.config.connect, source[0], source[1])
            if admitted.msg is None:  # undecoded: logged as it came, never acted on
                self._call_tap("rx", admitted.frame)
            else:
                valid += 1
                self._deliver(admitted.msg, admitted.frame)
        return valid

    def _deliver(self, msg: Any, frame: bytes) -> None:
        recv_s = time.monotonic()
        msg_type = msg.get_type()
        with self._lock:
            self._latest[msg_type] = (msg, recv_s)
            subscribers = self._subscribers.get(msg_type, ())
            waiters = tuple(self._waiters.get(msg_type, ()))
        for waiter in waiters:  # predicates are user code: run them outside the lock
            if self._matches(waiter, msg):
                with self._lock:
                    registered = self._waiters.get(msg_type, [])
                    if waiter not in registered:
                        continue  # timed out meanwhile
                    registered.remove(waiter)
                    waiter.msg = msg
                waiter.event.set()
        for callback in subscribers:
            try:
                callback(msg, recv_s)
            except Exception:
                log.exception("subscriber %r for %s failed", callback, msg_type)
        self._call_tap("rx", frame)

    def _matches(self, waiter: _Waiter, msg: Any) -> bool:
        if waiter.predicate is None:
            return True
        try:
            return bool(waiter.predicate(msg))
        except Exception:
            log.exception("wait_for predicate failed on %s", msg.get_type())
            return False

    # -- sending -------------------------------------------------------------------------------

    @property
    def mav(self) -> Any:
        """pymavlink's encoder for this link (`link.mav.xxx_send(...)`); for firmware_bridge code only."""
        if self._transport is None:
            raise LinkError(f"link {self.config.connect!r}: not open; call open() first")
        return self._mav

    def _send(self, msg: Any, force_mavlink1: bool = False) -> None:
        mav = self._mav
        if self._transport is None:
            raise LinkError(f"link {self.config.connect!r}: closed; cannot send {msg.get_type()}")
        with self._send_lock:
            if self._auth is not None:
                # The spec's timestamp rules: never behind the wall clock (a receiver that starts later
                # refuses a stream more than a minute old) nor behind the newest accepted from a peer.
                signing = mav.signing
                signing.timestamp = max(signing.timestamp, signing_timestamp(time.time()),
                                        self._auth.newest_timestamp + 1)
            type(mav).send(mav, msg, force_mavlink1=force_mavlink1)
        with self._lock:
            self._tx_frames += 1
        self._call_tap("tx", msg.get_msgbuf())

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.mav.heartbeat_send(mavlink.MAV_TYPE_ONBOARD_CONTROLLER, mavlink.MAV_AUTOPILOT_INVALID, 0, 0,
                                        mavlink.MAV_STATE_ACTIVE)
            except Exception as exc:
                self._warnings.warning("heartbeat on %s failed: %s", self.config.connect, exc)
            self._stop.wait(self.config.heartbeat_period_s)

    def command_long(self, target_system: int, target_component: int, command: int, params: Sequence[float],
                     timeout_s: float = 1.0, retries: int = 2) -> int:
        """Send COMMAND_LONG and return the MAV_RESULT of its COMMAND_ACK.

        Up to 1 + `retries` sends (confirmation counting up), `timeout_s` each; an IN_PROGRESS ack
        extends the wait for the final one. Raises LinkTimeout naming the command if no ack came."""
        if len(params) > 7:
            raise ValueError(f"command_long {command_name(command)}: at most 7 params, got {len(params)}")
        p = [float(v) for v in params] + [0.0] * (7 - len(params))

        def is_ack(ack: Any) -> bool:
            return (ack.command == command
                    and (target_system == 0 or ack.get_srcSystem() == target_system)
                    and (target_component == 0 or ack.get_srcComponent() == target_component)
                    and ack.target_system in (0, self.config.source_system)
                    and ack.target_component in (0, self.config.source_component))

        for confirmation in range(retries + 1):
            waiter = self._expect("COMMAND_ACK", is_ack)
            self.mav.command_long_send(target_system, target_component, command, confirmation, *p)
            ack = self._await("COMMAND_ACK", waiter, timeout_s)
            while ack is not None and ack.result == mavlink.MAV_RESULT_IN_PROGRESS:
                ack = self.wait_for("COMMAND_ACK", timeout_s, is_ack)
            if ack is not None:
                return int(ack.result)
            if not self.is_open:
                break
        raise LinkTimeout(f"{command_name(command)} to {target_system}/{target_component} on {self.config.connect}: "
                          f"no COMMAND_ACK after {retries + 1} tries of {timeout_s:.2f} s; is the vehicle connected "
                          f"and sending to this link?")

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def stats(self) -> LinkStats:
        with self._lock:
            return LinkStats(tx_frames=self._tx_frames, **dataclasses.asdict(self._rx))

    def _call_tap(self, direction: str, frame: bytes) -> None:
        if self._tap is None or _is_setup_signing(frame):
            return
        try:
            self._tap(direction, time.time(), bytes(frame))
        except Exception as exc:
            self._warnings.warning("tap failed on a %s frame: %s", direction, exc)


def _is_setup_signing(frame: bytes) -> bool:
    if len(frame) >= 10 and frame[0] == 0xFD:
        return int.from_bytes(frame[7:10], "little") == SETUP_SIGNING_ID
    return len(frame) >= 6 and frame[0] == 0xFE and frame[5] == SETUP_SIGNING_ID
