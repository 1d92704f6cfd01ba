"""The transports under a MAVLink link: the few socket and serial calls pymavlink's `mavutil` made for us.

Not `mavutil` itself: its connection classes print, spin on a closed TCP peer and switch a
process-wide dialect under the receive thread; what a link needs from a transport is small.
Each transport waits for input (`wait`), reads what is there (`read` -> bytes and, for UDP, the
sender) and writes whole frames (`write`, raising OSError when it cannot). Non-blocking, so a read
never stalls the link's receive thread past `wait`'s timeout. `datagrams` says whether a read holds
whole frames (UDP) or a byte stream (TCP, serial); `server` marks a listening UDP socket, which
answers its peers (`send_to`).

Connect strings (pymavlink's spelling): `udp:HOST:PORT` / `udpin:HOST:PORT` listen there (replies
go to the peers that sent valid MAVLink, the PX4/ArduPilot SITL convention), `udpout:HOST:PORT`
sends there, `tcp:HOST:PORT` connects (3 tries, 1 s apart), `tcpin:HOST:PORT` listens for one
client at a time, `serial:/dev/ttyACM0[:BAUD]`, `/dev/ttyACM0` or `/dev/ttyACM0,BAUD` open a serial
port (needs pyserial; 115200 baud by default). Anything else (log files, executables) is refused.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time

log = logging.getLogger(__name__)


class TransportError(RuntimeError):
    """A connect string that names no transport, or a transport that cannot be opened; says which and why."""


Address = tuple[str, int]


class Udp:
    """A UDP socket: listening on HOST:PORT (`server`), or sending to HOST:PORT from an ephemeral port."""

    datagrams = True

    def __init__(self, host: str, port: int, server: bool) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if server:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind((host, port))
            else:
                self.destination = (socket.gethostbyname(host), port)  # resolved once, not per frame
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def wait(self, timeout_s: float) -> bool:
        return bool(select.select([self.sock], [], [], timeout_s)[0])

    def read(self) -> tuple[bytes, Address | None]:
        try:
            data, source = self.sock.recvfrom(65535)
        except (BlockingIOError, ConnectionRefusedError):  # ICMP port unreachable after a send
            return b"", None
        return data, source

    def write(self, buf: bytes) -> None:
        self.sock.sendto(buf, self.destination)

    def send_to(self, buf: bytes, address: Address) -> None:
        self.sock.sendto(buf, address)

    def close(self) -> None:
        self.sock.close()


class TcpClient:
    """A TCP connection to HOST:PORT (3 tries, 1 s apart: a SITL may still be starting)."""

    datagrams = server = False

    def __init__(self, host: str, port: int, tries: int = 3, delay_s: float = 1.0) -> None:
        for attempt in range(tries):
            try:
                self.sock = socket.create_connection((host, port), timeout=5.0)
                break
            except OSError as exc:
                if attempt == tries - 1:
                    raise
                log.info("tcp:%s:%d: %s; retrying in %.0f s", host, port, exc, delay_s)
                time.sleep(delay_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)

    def wait(self, timeout_s: float) -> bool:
        return bool(select.select([self.sock], [], [], timeout_s)[0])

    def read(self) -> tuple[bytes, Address | None]:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return b"", None
        if not data:
            raise ConnectionError("closed by the peer")
        return data, None

    def write(self, buf: bytes) -> None:
        self.sock.sendall(buf)

    def close(self) -> None:
        self.sock.close()


class TcpServer:
    """Listens on HOST:PORT and talks to one client at a time; when it leaves, waits for the next."""

    datagrams = server = False

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(1)
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.client: socket.socket | None = None

    def wait(self, timeout_s: float) -> bool:
        return bool(select.select([self.client or self.listener], [], [], timeout_s)[0])

    def read(self) -> tuple[bytes, Address | None]:
        if self.client is None:
            try:
                client, address = self.listener.accept()
            except BlockingIOError:
                return b"", None
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setblocking(False)
            self.client = client
            log.info("tcpin: client %s:%d connected", *address[:2])
            return b"", None
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return b"", None
        except OSError:
            data = b""
        if not data:
            self._drop_client()
        return data, None

    def write(self, buf: bytes) -> None:
        if self.client is None:
            raise OSError(errno.ENOTCONN, "no client connected yet")
        try:
            self.client.sendall(buf)
        except OSError:
            self._drop_client()
            raise

    def _drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
            log.info("tcpin: client left; waiting for the next")

    def close(self) -> None:
        self._drop_client()
        self.listener.close()


class Serial:
    """A serial port through pyserial (imported here: only serial links need it)."""

    datagrams = server = False

    def __init__(self, device: str, baud: int) -> None:
        import serial  # type: ignore[import-untyped]

        # Opened at 1200 baud, then switched: pymavlink's workaround for Linux drivers that miss the
        # first baud rate set.
        self.port = serial.Serial(device, 1200, timeout=0, dsrdtr=False, rtscts=False, xonxoff=False)
        self.port.baudrate = baud
        try:
            self.fd: int | None = self.port.fileno()
        except Exception:  # Windows: no descriptor to select on
            self.fd = None

    def wait(self, timeout_s: float) -> bool:
        if self.fd is None:
            time.sleep(min(timeout_s, 0.01))
            return True
        return bool(select.select([self.fd], [], [], timeout_s)[0])

    def read(self) -> tuple[bytes, Address | None]:
        return bytes(self.port.read(4096)), None

    def write(self, buf: bytes) -> None:
        self.port.write(buf)

    def close(self) -> None:
        self.port.close()


Transport = Udp | TcpClient | TcpServer | Serial


def open_transport(connect: str) -> Transport:
    """The transport a connect string names, open; TransportError says which string and why."""
    text = connect.strip()
    device, baud, prefix, host, port = "", 0, "", "", ""
    if text.startswith("serial:"):
        device, _, rate = text[len("serial:"):].partition(":")
        if not device or (rate and not rate.isdigit()):
            raise TransportError(f"link {text!r}: expected serial:/dev/DEVICE[:BAUD]")
        baud = int(rate or 115200)
    elif text.startswith(("udp:", "udpin:", "udpout:", "tcp:", "tcpin:")):
        prefix, _, address = text.partition(":")
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise TransportError(f"link {text!r}: expected PREFIX:HOST:PORT, e.g. udp:127.0.0.1:14540")
    elif text.startswith("/dev/") or text.upper().startswith("COM"):
        device, baud = text, 115200
        for sep in (",", ":"):  # /dev/ttyACM0,57600 (pymavlink's spelling) or /dev/ttyACM0:57600
            head, found, rate = text.rpartition(sep)
            if found and rate.isdigit() and not os.path.exists(text):
                device, baud = head, int(rate)
    else:
        raise TransportError(f"link {text!r}: expected udp:/udpin:/udpout:/tcp:/tcpin:HOST:PORT, "
                             f"serial:/dev/DEVICE[:BAUD] or a /dev/ path")
    try:
        if device:
            return Serial(device, baud)
        if prefix in ("udp", "udpin", "udpout"):
            return Udp(host, int(port), server=prefix != "udpout")
        return TcpClient(host, int(port)) if prefix == "tcp" else TcpServer(host, int(port))
    except ModuleNotFoundError as exc:
        raise TransportError(f"link {text!r}: {exc}; serial links need `pip install pyserial`") from exc
    except Exception as exc:  # OSError, serial.SerialException, socket.gaierror ...
        raise TransportError(f"link {text!r}: cannot open ({exc})") from exc
