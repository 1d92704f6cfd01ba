"""A fault-injecting UDP proxy between a runtime and a SITL vehicle: drop, delay, duplicate, reorder,
corrupt and cut the link, per direction, at set rates, from a seed.

Plumbing on 127.0.0.1 (V, R are ports; the SITL needs no change, the runtime's Link neither)::

    SITL --out udp:127.0.0.1:V ──> [V  vehicle side] proxy [runtime side, own port] ──> runtime Link udp:127.0.0.1:R
    SITL <── from V, to the SITL's address ─────────┘      └── replies to the proxy <── (the Link answers its peer)

- The SITL sends to V as it would to the runtime (`--out udp:127.0.0.1:V`). The proxy learns the
  SITL's address from its datagrams, or is told it (`--vehicle HOST:PORT`, pair with the SITL's
  `--bind`; then nobody else can take that place).
- The proxy sends what it forwards to the runtime to R from its own runtime-side socket; the runtime
  listens on R (`Link(LinkConfig("udp:127.0.0.1:R"))`) and, like with a SITL, answers whoever sent
  valid MAVLink, i.e. the proxy, which forwards the answers to the SITL from V.

Faults (`FaultSpec`, one per direction: `to_runtime` = vehicle -> runtime, telemetry and acks;
`to_vehicle` = runtime -> vehicle, commands and setpoints), applied to each datagram in this order:
cut (inside [cut_start_s, cut_start_s + cut_duration_s) of proxy time, every datagram is lost), drop
(probability `drop_rate`), corrupt (`corrupt_rate`: 1 to 3 bytes XORed with a random non-zero
byte), duplicate (`duplicate_rate`: a second copy right after), reorder (`reorder_rate`: held back
and released right after the next datagram of that direction, or after `reorder_hold_ms`), delay
(`delay_ms` plus uniform +/-`jitter_ms`, never negative; jitter alone reorders too). Proxy time
starts when the proxy is ready. A datagram is the unit: MAVLink over UDP puts whole frames in one.

Each direction has its own generator seeded from (seed, direction), so one direction's traffic does
not change the other's faults. Counters per direction are printed as one JSON object on stdout at
exit; the first stdout line is a JSON "ready" event with the ports (what `FaultProxy` waits for).

Entry: `python -m dreamlink.sim.fault_proxy --listen-vehicle V --to-runtime R [--seed N]
[--faults SPEC] [--faults-to-runtime SPEC] [--faults-to-vehicle SPEC] [--vehicle HOST:PORT]`
with SPEC like `drop_rate=0.2,delay_ms=50,jitter_ms=10,cut_start_s=2,cut_duration_s=2` (`--faults`
applies to both directions, the per-direction options override its keys). SIGTERM/SIGINT exit 0.
The launcher for tests and campaigns is `dreamlink.sim.proxy_launcher` (`FaultProxy`, `SitlBehindProxy`).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import math
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DIRECTIONS = ("to_runtime", "to_vehicle")
_RATES = ("drop_rate", "duplicate_rate", "reorder_rate", "corrupt_rate")
_MAX_WAIT_S = 0.1  # select timeout: bounds how long a stop request waits


@dataclass(frozen=True)
class FaultSpec:
    """Faults for one direction. Rates are probabilities per datagram; times are proxy time."""

    drop_rate: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    reorder_hold_ms: float = 50.0  # a reordered datagram waits at most this long for a successor
    corrupt_rate: float = 0.0
    cut_start_s: float = 0.0
    cut_duration_s: float = 0.0  # 0 = no cut

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"FaultSpec.{f.name}: expected a finite number, got {value!r}")
            if f.name in _RATES and not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultSpec.{f.name}: expected a probability in [0, 1], got {value!r}")
            if value < 0:
                raise ValueError(f"FaultSpec.{f.name}: expected >= 0, got {value!r}")

    @classmethod
    def parse(cls, text: str, base: FaultSpec | None = None) -> FaultSpec:
        """`KEY=VALUE[,KEY=VALUE...]` on top of `base` (default: no faults); "" means `base`."""
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise ValueError(f"fault spec {text!r}: {item!r} is not KEY=VALUE with KEY one of {names}")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"fault spec {text!r}: {key} must be a number, got {raw.strip()!r}") from None
        return dataclasses.replace(base or cls(), **values)

    def to_text(self) -> str:
        """The `parse` form of this spec, listing only what differs from no faults."""
        default = FaultSpec()
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in dataclasses.fields(self)
                        if getattr(self, f.name) != getattr(default, f.name))

    def in_cut(self, t_s: float) -> bool:
        return self.cut_duration_s > 0 and self.cut_start_s <= t_s < self.cut_start_s + self.cut_duration_s


NO_FAULTS = FaultSpec()


@dataclass
class DirectionCounters:
    """What happened to the datagrams of one direction (duplicates count once as `duplicated`)."""

    received: int = 0
    forwarded: int = 0  # datagrams sent on, copies included
    dropped: int = 0  # by drop_rate
    cut: int = 0  # lost inside the cut window
    corrupted: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0  # released later than received (delay_ms / jitter_ms > 0)
    unroutable: int = 0  # arrived before the proxy knew where to send them
    send_errors: int = 0


class FaultInjector:
    """One direction's faults: decides what becomes of each datagram. Pure apart from its generator
    and the one datagram it may hold back for reordering; times are proxy seconds."""

    def __init__(self, spec: FaultSpec, rng: np.random.Generator, counters: DirectionCounters | None = None) -> None:
        self.spec = spec
        self.counters = counters if counters is not None else DirectionCounters()
        self._rng = rng
        self._held: tuple[float, bytes] | None = None  # (release deadline, datagram)

    def decide(self, datagram: bytes, now_s: float) -> list[tuple[float, bytes]]:
        """The (release time, bytes) to send for one received datagram, in order (may be empty)."""
        spec, c = self.spec, self.counters
        c.received += 1
        if spec.in_cut(now_s):
            c.cut += 1
            return []
        if spec.drop_rate and self._rng.random() < spec.drop_rate:
            c.dropped += 1
            return []
        if spec.corrupt_rate and self._rng.random() < spec.corrupt_rate:
            datagram = self._corrupt(datagram)
            c.corrupted += 1
        copies = [datagram]
        if spec.duplicate_rate and self._rng.random() < spec.duplicate_rate:
            copies.append(datagram)
            c.duplicated += 1
        release_s = now_s + self._delay_s()
        if release_s > now_s:
            c.delayed += 1
        out = [(release_s, d) for d in copies]
        if self._held is not None:
            out.append((release_s, self._held[1]))  # overtaken by this one
            self._held = None
        elif spec.reorder_rate and self._rng.random() < spec.reorder_rate:
            c.reordered += 1
            held, out = out[0], out[1:]
            self._held = (held[0] + spec.reorder_hold_ms / 1000.0, held[1])
        return out

    def due_held(self, now_s: float) -> list[tuple[float, bytes]]:
        """The held-back datagram once nothing overtook it within `reorder_hold_ms`."""
        if self._held is not None and now_s >= self._held[0]:
            held, self._held = self._held, None
            return [held]
        return []

    @property
    def held_deadline_s(self) -> float:
        return self._held[0] if self._held is not None else math.inf

    def _delay_s(self) -> float:
        spec = self.spec
        jitter = self._rng.uniform(-spec.jitter_ms, spec.jitter_ms) if spec.jitter_ms else 0.0
        return max(0.0, spec.delay_ms + jitter) / 1000.0

    def _corrupt(self, datagram: bytes) -> bytes:
        data = bytearray(datagram)
        if not data:
            return datagram
        for _ in range(int(self._rng.integers(1, 4))):
            data[int(self._rng.integers(len(data)))] ^= int(self._rng.integers(1, 256))
        return bytes(data)


@dataclass(frozen=True)
class ProxyConfig:
    listen_vehicle_port: int
    to_runtime_port: int
    host: str = "127.0.0.1"
    vehicle_addr: tuple[str, int] | None = None  # None: learn from the newest datagram on the vehicle side
    seed: int = 0
    faults: dict[str, FaultSpec] = field(default_factory=lambda: {d: FaultSpec() for d in DIRECTIONS})

    def __post_init__(self) -> None:
        for name in ("listen_vehicle_port", "to_runtime_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"ProxyConfig.{name}: expected 1..65535, got {port!r}")
        if self.seed < 0:
            raise ValueError(f"ProxyConfig.seed: expected an integer >= 0, got {self.seed!r}")
        if set(self.faults) != set(DIRECTIONS):
            raise ValueError(f"ProxyConfig.faults: expected keys {DIRECTIONS}, got {sorted(self.faults)}")


class ProxyLoop:
    """The proxy process's loop: two sockets, one injector per direction, one release queue by time."""

    def __init__(self, config: ProxyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.vehicle_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.runtime_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.vehicle_sock.bind((config.host, config.listen_vehicle_port))
            self.runtime_sock.bind((config.host, 0))
        except OSError:
            self.close()
            raise
        for sock in (self.vehicle_sock, self.runtime_sock):
            sock.setblocking(False)
        self.runtime_addr = (config.host, config.to_runtime_port)
        self.vehicle_addr = config.vehicle_addr
        self.injectors = {d: FaultInjector(config.faults[d], np.random.default_rng([config.seed, i]))
                          for i, d in enumerate(DIRECTIONS)}
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._seq = 0
        self.start_s = clock()

    @property
    def runtime_side_port(self) -> int:
        return int(self.runtime_sock.getsockname()[1])

    def now_s(self) -> float:
        return self._clock() - self.start_s

    def counters(self) -> dict[str, Any]:
        return {d: dataclasses.asdict(inj.counters) for d, inj in self.injectors.items()}

    def serve(self, should_stop: Callable[[], bool], wake_socks: Sequence[socket.socket] = ()) -> None:
        readers = [self.vehicle_sock, self.runtime_sock, *wake_socks]
        while not should_stop():
            self._release_due()
            deadline = min(self._queue[0][0] if self._queue else math.inf,
                           *(inj.held_deadline_s for inj in self.injectors.values()))
            wait_s = min(_MAX_WAIT_S, max(0.0, deadline - self.now_s()))
            readable, _, _ = select.select(readers, [], [], wait_s)
            for sock in readable:
                if sock is self.vehicle_sock:
                    self._drain(sock, "to_runtime")
                elif sock is self.runtime_sock:
                    self._drain(sock, "to_vehicle")
                else:
                    try:
                        sock.recv(4096)
                    except OSError:
                        pass

    def _drain(self, sock: socket.socket, direction: str, max_datagrams: int = 256) -> None:
        injector = self.injectors[direction]
        for _ in range(max_datagrams):
            try:
                datagram, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from an earlier send: not about this datagram
                continue
            if direction == "to_runtime" and self.config.vehicle_addr is None and addr != self.vehicle_addr:
                log.info("vehicle is at %s:%d", *addr)
                self.vehicle_addr = addr
            now_s = self.now_s()
            for release_s, data in injector.decide(datagram, now_s):
                heapq.heappush(self._queue, (release_s, self._seq, direction, data))
                self._seq += 1

    def _release_due(self) -> None:
        now_s = self.now_s()
        for direction, injector in self.injectors.items():
            for release_s, data in injector.due_held(now_s):
                heapq.heappush(self._queue, (release_s, self._seq, direction, data))
                self._seq += 1
        while self._queue and self._queue[0][0] <= now_s:
            _, _, direction, data = heapq.heappop(self._queue)
            self._send(direction, data)

    def _send(self, direction: str, data: bytes) -> None:
        counters = self.injectors[direction].counters
        addr: tuple[str, int] | None
        if direction == "to_runtime":
            sock, addr = self.runtime_sock, self.runtime_addr
        else:
            sock, addr = self.vehicle_sock, self.vehicle_addr
        if addr is None:
            counters.unroutable += 1
            return
        try:
            sock.sendto(data, addr)
            counters.forwarded += 1
        except OSError:  # nobody listening yet, or a full buffer: UDP, the endpoints cope
            counters.send_errors += 1

    def close(self) -> None:
        self.vehicle_sock.close()
        self.runtime_sock.close()


def _udp_address(text: str) -> tuple[str, int]:
    address = text.removeprefix("udp:")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a UDP port 1..65535, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dreamlink.sim.fault_proxy",
                                description="Fault-injecting UDP proxy between a runtime and a SITL vehicle.")
    p.add_argument("--listen-vehicle", type=_port, required=True, metavar="PORT",
                   help="port the SITL sends to (its --out udp:HOST:PORT)")
    p.add_argument("--to-runtime", type=_port, required=True, metavar="PORT",
                   help="port the runtime's Link listens on (udp:HOST:PORT)")
    p.add_argument("--host", default="127.0.0.1", help="loopback by default")
    p.add_argument("--vehicle", type=_udp_address, default=None, metavar="HOST:PORT",
                   help="the SITL's own address (its --bind); default: learn it from its datagrams")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", default="", metavar="SPEC", help="both directions, e.g. drop_rate=0.2,delay_ms=50")
    p.add_argument("--faults-to-runtime", default="", metavar="SPEC", help="vehicle -> runtime, over --faults")
    p.add_argument("--faults-to-vehicle", default="", metavar="SPEC", help="runtime -> vehicle, over --faults")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str]) -> int:
    """Run the proxy until SIGTERM/SIGINT; prints the ready event and the final counters on stdout."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        both = FaultSpec.parse(args.faults)
        faults = {"to_runtime": FaultSpec.parse(args.faults_to_runtime, both),
                  "to_vehicle": FaultSpec.parse(args.faults_to_vehicle, both)}
        config = ProxyConfig(args.listen_vehicle, args.to_runtime, args.host, args.vehicle, args.seed, faults)
    except ValueError as exc:
        log.error("bad argument: %s", exc)
        return 2
    stop = threading.Event()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            proxy = ProxyLoop(config)
        except OSError as exc:
            log.error("cannot bind udp:%s:%d for the vehicle side (%s); is the port free?", args.host,
                      args.listen_vehicle, exc)
            return 1
        try:
            ready = {"event": "ready", "listen_vehicle": args.listen_vehicle, "to_runtime": args.to_runtime,
                     "runtime_side_port": proxy.runtime_side_port,
                     "faults": {d: s.to_text() for d, s in faults.items()}, "seed": args.seed}
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
            log.info("fault proxy: vehicle side udp:%s:%d, runtime side :%d -> udp:%s:%d; faults %s", args.host,
                     args.listen_vehicle, proxy.runtime_side_port, args.host, args.to_runtime, ready["faults"])
            proxy.serve(stop.is_set, wake_socks=(wake_r,))
        finally:
            proxy.close()
            sys.stdout.write(json.dumps({"event": "counters", **proxy.counters()}) + "\n")
            sys.stdout.flush()
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wake_r.close()
        wake_w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
