"""The flight recorder's .tlog: records never go back in time, whichever thread stamped its frame first."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np

from dreamlink.firmware_bridge.tlog import read_tlog
from dreamlink.runtime.recorder import TLOG_NAME, FlightRecorder
from dreamlink.sim.mavlink_udp import mavlink
from dreamlink.spec import QUAD


def _frame(seq: int) -> bytes:
    mav = mavlink.MAVLink(None, srcSystem=1, srcComponent=191)
    mav.seq = seq % 256
    return bytes(mav.heartbeat_encode(mavlink.MAV_TYPE_ONBOARD_CONTROLLER, mavlink.MAV_AUTOPILOT_INVALID, 0, 0,
                                      0).pack(mav))


def _stamps(path: Path) -> np.ndarray:
    return np.array([r.t_unix_s for r in read_tlog(path)])


def test_a_frame_stamped_before_the_last_written_is_written_at_its_time(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path, QUAD, horizon=1, max_ticks=1)
    rec.tap("rx", 1_800_000_000.000, _frame(0))
    rec.tap("tx", 1_799_999_999.996, _frame(1))  # the send thread stamped 4 ms earlier, wrote later
    rec.tap("rx", 1_800_000_000.010, _frame(2))
    rec.close()
    stamps = _stamps(tmp_path / TLOG_NAME)
    assert len(stamps) == 3 and np.all(np.diff(stamps) >= 0)


def test_concurrent_send_and_receive_never_go_backwards(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path, QUAD, horizon=1, max_ticks=1)

    def writer(direction: str, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(400):
            stamp = time.time()
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0, 0.002))  # preempted between stamping and writing
            rec.tap(direction, stamp, _frame(i))

    threads = [threading.Thread(target=writer, args=(d, s)) for d, s in (("rx", 1), ("tx", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    stamps = _stamps(tmp_path / TLOG_NAME)
    assert len(stamps) == 800 and np.all(np.diff(stamps) >= 0)
