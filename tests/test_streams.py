"""StreamWatch: which telemetry streams are overdue and must be asked for again (pure, injected time)."""

from __future__ import annotations

import math

import pytest

from dreamlink.firmware_bridge.streams import StreamWatch


def test_a_stream_lowered_to_4_hz_is_due_within_three_periods_and_not_spammed() -> None:
    w = StreamWatch({"LOCAL_POSITION_NED": 50.0}, gap_periods=3.0, min_reassert_s=0.5)
    t = 0.0
    for _ in range(100):  # 2 s at 50 Hz
        w.arrived("LOCAL_POSITION_NED", t)
        t += 0.02
    assert w.due(t) == [] and w.measured_hz("LOCAL_POSITION_NED") == pytest.approx(50.0)
    last = t - 0.02
    assert w.due(last + 0.05) == []  # 2.5 periods late: still within tolerance
    assert w.due(last + 0.061) == ["LOCAL_POSITION_NED"]
    assert w.due(last + 0.2) == []  # asked again 0.14 s ago: wait for the answer
    assert w.due(last + 0.6) == ["LOCAL_POSITION_NED"] and w.reasserts("LOCAL_POSITION_NED") == 2


def test_a_stream_that_never_flowed_is_not_due_and_the_report_has_the_lowest_rate() -> None:
    w = StreamWatch({"LOCAL_POSITION_NED": 50.0, "ATTITUDE": 50.0})
    for i in range(50):
        w.arrived("ATTITUDE", i * 0.02)
    for i in range(8):  # then 4 Hz for 2 s
        w.arrived("ATTITUDE", 1.0 + i * 0.25)
    assert w.due(100.0) == ["ATTITUDE"]  # LOCAL_POSITION_NED never came: connect() waits for it, not this
    r = w.report()
    assert r["ATTITUDE"]["lowest_1s_hz"] == pytest.approx(4.0) and r["ATTITUDE"]["worst_gap_ms"] == 250.0
    assert math.isnan(r["LOCAL_POSITION_NED"]["measured_hz"])  # type: ignore[arg-type]


def test_bad_rates_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="ATTITUDE"):
        StreamWatch({"ATTITUDE": 0.0})
