"""MAVLink 2 message signing: the key file, the receive-side signature check, the signing timestamp.

Frame (mavlink.io "Message signing"): a signed MAVLink 2 frame has bit 0x01 of its incompat flags
set and 13 bytes after the CRC: link id (1), timestamp (6, little endian, 10 µs units since
2015-01-01 UTC) and signature (6) = the first 48 bits of sha256(key + frame up to and including the
timestamp). Streams are (link id, system id, component id); each stream's timestamps must grow.

Sending uses pymavlink's own signer (`MAVLink.signing`, what `mavutil.setup_signing` fills in).
Receiving is checked here, not by pymavlink's parser: pymavlink 2.4.50's `check_signature` records
a stream's timestamp *before* comparing the signature, so one forged frame with a far-future
timestamp (link id, system and component ids are readable on the wire) locks the real sender out
for good. `Authenticator.check` compares the signature first (constant time) and only then moves
the stream forward. A new stream is accepted if its timestamp is at most one minute behind ours.

What must be signed, and who may command us, is the admission rule's (`admission.Admission`), the
one rule that decides which received frames a receiver acts on.

Keys: 32 bytes in a file that only its owner can access (no group/other permission bits, like an
ssh private key), either raw or as 64 hex digits. The key never appears in a repr, a log line or an
error message; `SigningKey.key_id` (a hash prefix) lets two sides confirm they hold the same key.
SETUP_SIGNING, which would carry a key, is never written to flight logs by the Link.

Standard library only, so the SITL (the other end of the same protocol) can use it too.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

KEY_LEN = 32
SIGNATURE_BLOCK_LEN = 13
IFLAG_SIGNED = 0x01
MAVLINK2_MAGIC = 0xFD
MAVLINK_EPOCH_UNIX_S = 1_420_070_400  # 2015-01-01 00:00:00 UTC
NEW_STREAM_WINDOW = 60 * 100_000  # one minute in 10 µs units

SETUP_SIGNING_ID = 256


class SigningKeyError(ValueError):
    """The signing key file is missing, unsafe or malformed; the message names the file (never the key)."""


class SigningKey:
    """A 32-byte MAVLink signing key loaded from `source`. Its repr and str never show the key."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str = "<memory>") -> None:
        if not isinstance(secret, bytes) or len(secret) != KEY_LEN:
            raise SigningKeyError(f"signing key from {source}: expected {KEY_LEN} bytes")
        self._secret = secret
        self.source = source

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def key_id(self) -> str:
        """8 hex digits derived from the key (not reversible): compare it, never the key."""
        return hashlib.sha256(b"dreamlink-key-id\0" + self._secret).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SigningKey(id={self.key_id}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:  # no pickling into a log, a queue or a crash dump
        raise TypeError("SigningKey cannot be pickled")


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a key file: 32 raw bytes or 64 hex digits; refused if group or others have any access."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise SigningKeyError(f"signing key file {p}: does not exist; create it with 32 random bytes "
                              f"and chmod 600") from None
    except OSError as exc:
        raise SigningKeyError(f"signing key file {p}: cannot open ({exc.strerror}); it must be a regular "
                              f"file (not a symlink) readable by this user") from None
    try:
        info = os.fstat(fd)  # the file we opened, not whatever the path points at now
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"signing key file {p}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SigningKeyError(f"signing key file {p} has mode {mode:04o}: group or others can access it; "
                                  f"run `chmod 600 {p}` (and replace the key if others may have read it)")
        data = os.read(fd, 4 * KEY_LEN + 1)
    finally:
        os.close(fd)
    secret = _decode_key(data)
    if secret is None:
        raise SigningKeyError(f"signing key file {p}: expected {KEY_LEN} raw bytes or {2 * KEY_LEN} hex digits, "
                              f"got {len(data)} bytes of something else")
    return SigningKey(secret, str(p))


def _decode_key(data: bytes) -> bytes | None:
    if len(data) == KEY_LEN:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def write_signing_key(path: str | os.PathLike[str], secret: bytes | None = None) -> SigningKey:
    """Create a new key file (mode 0600, never overwrites) with `secret` or 32 fresh random bytes."""
    secret = secrets.token_bytes(KEY_LEN) if secret is None else secret
    key = SigningKey(secret, str(path))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"signing key file {path}: already exists; not overwriting a key") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def signing_timestamp(unix_s: float) -> int:
    """MAVLink signing time: 10 µs units since 2015-01-01 UTC."""
    return max(0, int((unix_s - MAVLINK_EPOCH_UNIX_S) * 100_000))


class Verdict(enum.Enum):
    SIGNED = "signed"  # signature and timestamp good
    UNSIGNED = "unsigned"  # no signature block (or MAVLink 1, which cannot carry one)
    BAD_SIGNATURE = "bad_signature"  # signature does not match the key
    REPLAYED = "replayed"  # good signature, but not newer than the stream's last frame (or an old stream)


class Authenticator:
    """Receive-side signature checks for one link. Not thread-safe: the receive thread owns it.

    `newest_timestamp` is the highest timestamp accepted so far; the sender moves its own
    timestamp up to it (the spec's rule, so a peer with a clock ahead of ours accepts our frames).
    """

    def __init__(self, key: SigningKey, clock: Callable[[], float] = time.time) -> None:
        self._secret = key.secret
        self._clock = clock
        self._streams: dict[tuple[int, int, int], int] = {}
        self.newest_timestamp = 0

    def check(self, frame: bytes | bytearray) -> Verdict:
        """Judge one whole frame (header to signature), as pymavlink's `msg.get_msgbuf()` returns it."""
        if len(frame) < 12 or frame[0] != MAVLINK2_MAGIC or not frame[2] & IFLAG_SIGNED:
            return Verdict.UNSIGNED
        if len(frame) < 12 + SIGNATURE_BLOCK_LEN:
            return Verdict.BAD_SIGNATURE
        expected = hashlib.sha256(self._secret + bytes(frame[:-6])).digest()[:6]
        if not hmac.compare_digest(expected, bytes(frame[-6:])):
            return Verdict.BAD_SIGNATURE
        link_id = frame[-SIGNATURE_BLOCK_LEN]
        timestamp = int.from_bytes(frame[-12:-6], "little")
        stream = (link_id, frame[5], frame[6])
        last = self._streams.get(stream)
        if last is not None:
            if timestamp <= last:
                return Verdict.REPLAYED
        elif timestamp + NEW_STREAM_WINDOW < max(self.newest_timestamp, signing_timestamp(self._clock())):
            return Verdict.REPLAYED  # a "new" stream from more than a minute ago: a recording played back
        self._streams[stream] = timestamp
        self.newest_timestamp = max(self.newest_timestamp, timestamp)
        return Verdict.SIGNED
