"""Reading .tlog files and turning them into transitions, on two real SITL flights (ArduCopter 4.8 and PX4 1.16,
logged by MAVProxy; ../shared/data/sitl-logs/README.md gives the figures checked here), and on damaged
copies of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shared_logs import ARDUPILOT_LOG, PX4_LOG, needs_logs

from dreamlink.calibration.tlog_data import TlogDataConfig, TlogDataError, tlog_to_transitions
from dreamlink.firmware_bridge.ardupilot import copter_mode_name
from dreamlink.firmware_bridge.link import mavlink
from dreamlink.firmware_bridge.px4 import px4_mode_name
from dreamlink.firmware_bridge.tlog import TlogError, TlogReport, iter_tlog, read_tlog
from dreamlink.spec import QUAD

pytestmark = needs_logs

# README "Records of each type" (mavlogdump with the ardupilotmega dialect; CURRENT_MODE, 436, decodes with "all").
README_COUNTS = {
    "ardupilot": {"LOCAL_POSITION_NED": 8736, "ATTITUDE": 8719, "ATTITUDE_QUATERNION": 8703, "HIGHRES_IMU": 8670,
                  "SET_POSITION_TARGET_LOCAL_NED": 3652, "POSITION_TARGET_LOCAL_NED": 1547, "PARAM_VALUE": 1386,
                  "HEARTBEAT": 536, "SYS_STATUS": 344, "EXTENDED_SYS_STATE": 344, "COMMAND_LONG": 19,
                  "COMMAND_ACK": 19, "STATUSTEXT": 9, "FILE_TRANSFER_PROTOCOL": 70, "REQUEST_DATA_STREAM": 1},
    "px4": {"LOCAL_POSITION_NED": 9344, "ATTITUDE": 9668, "ATTITUDE_QUATERNION": 9432, "HIGHRES_IMU": 9432,
            "ODOMETRY": 9325, "SET_POSITION_TARGET_LOCAL_NED": 3905, "PARAM_VALUE": 905, "HEARTBEAT": 564,
            "COMMAND_LONG": 34, "COMMAND_ACK": 29, "STATUSTEXT": 5, "CURRENT_MODE": 95, "PING": 189},
}
README_RECORDS = {"ardupilot": 45786, "px4": 62842}


@pytest.fixture(scope="module")
def logs() -> dict[str, TlogReport]:
    return {"ardupilot": read_tlog(ARDUPILOT_LOG), "px4": read_tlog(PX4_LOG)}


@pytest.mark.parametrize("kind", ["ardupilot", "px4"])
def test_real_logs_read_completely_with_the_readme_counts(logs: dict[str, TlogReport], kind: str) -> None:
    report = logs[kind]
    assert report.complete and report.backwards == 0
    counts = report.counts()
    assert {k: counts.get(k, 0) for k in README_COUNTS[kind]} == README_COUNTS[kind]
    assert len(report) + sum(report.unknown_ids.values()) == README_RECORDS[kind]
    assert report.unknown_ids == ({} if kind == "ardupilot" else {8: 189, 380: 94, 410: 24, 411: 63})
    offsets = [r.offset for r in report]
    assert offsets[0] == 0 and offsets == sorted(offsets)


def test_mavproxy_link_bits_are_stripped_and_kept(logs: dict[str, TlogReport]) -> None:
    report = logs["ardupilot"]
    assert all(round(r.t_unix_s * 1e6) % 4 == 0 for r in report)
    links = {r.src: r.link for r in report if r.src in ((1, 1), (255, 230), (1, 190))}
    assert links == {(1, 1): 0, (255, 230): 3, (1, 190): 2}
    mavproxy_params = [r.t_unix_s for r in report if r.src == (1, 190)]
    assert len(mavproxy_params) == 1363 and len(set(mavproxy_params)) == 1  # written at once after MAVFTP


def test_autopilot_is_in_its_control_mode_during_the_excitation(logs: dict[str, TlogReport]) -> None:
    for kind, name, mode_name in (("ardupilot", "GUIDED", copter_mode_name), ("px4", "OFFBOARD", px4_mode_name)):
        records = logs[kind].records
        start = next(r.t_unix_s for r in records if r.type == "SET_POSITION_TARGET_LOCAL_NED"
                     and r.msg.type_mask == 2503)
        landing = next(r.t_unix_s for r in records if r.type == "COMMAND_LONG" and r.src == (1, 191)
                       and r.t_unix_s > start)
        heartbeats = [r.msg for r in records if r.type == "HEARTBEAT" and r.src == (1, 1)
                      and start <= r.t_unix_s < landing]
        assert len(heartbeats) >= 140
        assert {mode_name(h.custom_mode) for h in heartbeats} == {name}
        assert all(h.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED for h in heartbeats)
    px4 = logs["px4"].records
    set_mode_acks = [r for r in px4 if r.type == "COMMAND_ACK" and r.msg.command == mavlink.MAV_CMD_DO_SET_MODE]
    assert len(set_mode_acks) == 2  # PX4 1.16's double ACK
    assert all(str(r.msg.text).endswith("\t") for r in px4 if r.type == "STATUSTEXT")


@pytest.mark.parametrize(("kind", "path", "flown_mean_mps", "tight"),
                         [("ardupilot", ARDUPILOT_LOG, 0.89, True), ("px4", PX4_LOG, 0.68, False)])
def test_transitions_from_the_real_flights(kind: str, path: Path, flown_mean_mps: float, tight: bool) -> None:
    data = tlog_to_transitions(path, QUAD, kind)
    n = len(data)
    assert 140 * 50 <= n <= 150 * 50 and data.n_episodes == 1  # hover 3 s + excitation 140 s + hover 3 s
    assert data.state.shape == (n, 12) and data.action.shape == (n, 3) and data.next_state.shape == (n, 12)
    np.testing.assert_array_equal(data.state[1:], data.next_state[:-1])
    assert np.all(data.action >= QUAD.action_low) and np.all(data.action <= QUAD.action_high)
    commanded = np.linalg.norm(data.action[:, :2], axis=1)
    assert commanded.max() == pytest.approx(3.0, abs=1e-3) and commanded.mean() == pytest.approx(1.285, abs=0.03)
    flown = np.linalg.norm(data.state[:, 3:5], axis=1)
    assert flown.mean() == pytest.approx(flown_mean_mps, abs=0.02)
    altitude = -data.state[:, QUAD.state_index("pos_d_m")]
    assert 4.0 < altitude.min() and altitude.max() < 10.5
    # LOCAL_POSITION_NED's velocity agrees with its own position differences over one control period.
    position_rate = (data.next_state[:, 0:3] - data.state[:, 0:3]) / QUAD.control_period_s
    mean_velocity = (data.next_state[:, 3:6] + data.state[:, 3:6]) / 2
    for axis in range(3):
        corr = np.corrcoef(position_rate[:, axis], mean_velocity[:, axis])[0, 1]
        slope = np.polyfit(mean_velocity[:, axis], position_rate[:, axis], 1)[0]
        assert corr > (0.99 if tight else 0.85) and (0.95 if tight else 0.85) < slope < 1.05
    assert data.meta["profile_kind"] == kind and data.meta["client"] == [1, 191]


def test_a_log_of_the_other_autopilot_or_client_is_refused(tmp_path: Path, logs: dict[str, TlogReport]) -> None:
    first_minute = tmp_path / "first-minute.tlog"  # cut at a record boundary: a complete, shorter log
    end = next(r.offset for r in logs["ardupilot"] if r.t_unix_s > logs["ardupilot"].records[0].t_unix_s + 60)
    first_minute.write_bytes(ARDUPILOT_LOG.read_bytes()[:end])
    assert len(tlog_to_transitions(first_minute, QUAD, "ardupilot")) > 1000
    with pytest.raises(TlogDataError, match=r"MAV_AUTOPILOT_ARDUPILOTMEGA.*not px4"):
        tlog_to_transitions(first_minute, QUAD, "px4")
    with pytest.raises(TlogDataError, match="client 1/42"):
        tlog_to_transitions(first_minute, QUAD, "ardupilot", config=TlogDataConfig(client=(1, 42)))
    with pytest.raises(ValueError, match="profile_kind"):
        tlog_to_transitions(first_minute, QUAD, "betaflight")


# -- damaged copies -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def middle(logs: dict[str, TlogReport]) -> tuple[int, int, int]:
    """(index, offset, length) of a LOCAL_POSITION_NED record near the middle of the ArduPilot log."""
    records = logs["ardupilot"].records
    k = next(i for i in range(len(records) // 2, len(records)) if records[i].type == "LOCAL_POSITION_NED")
    return k, records[k].offset, records[k + 1].offset - records[k].offset


def test_truncated_log_names_the_offset_and_keeps_the_part_before(tmp_path: Path, middle: tuple[int, int, int]) -> None:
    k, offset, length = middle
    cut = tmp_path / "cut.tlog"
    cut.write_bytes(ARDUPILOT_LOG.read_bytes()[:offset + length // 2])
    with pytest.raises(TlogError, match=f"record cut short.* at byte {offset} ") as caught:
        read_tlog(cut)
    assert caught.value.offset == offset and len(caught.value.report) == k
    kept = read_tlog(cut, on_error="stop", types={"HEARTBEAT"})
    assert kept.records_read == k and kept.truncated_at == offset and not kept.bad_offsets and not kept.complete
    partial = tlog_to_transitions(cut, QUAD, "ardupilot", on_error="stop")
    assert 0 < len(partial) < 7300 and partial.meta["truncated_at"] == offset


def test_corrupt_log_names_the_offset_and_skip_reads_on(tmp_path: Path, logs: dict[str, TlogReport],
                                                        middle: tuple[int, int, int]) -> None:
    k, offset, _ = middle
    data = bytearray(ARDUPILOT_LOG.read_bytes())
    data[offset + 8 + 10 + 5] ^= 0xFF  # a payload byte of the LOCAL_POSITION_NED frame: its CRC no longer holds
    flipped = tmp_path / "flipped.tlog"
    flipped.write_bytes(bytes(data))
    with pytest.raises(TlogError, match=f"CRC.* at byte {offset} ") as caught:
        read_tlog(flipped)
    assert len(caught.value.report) == k and caught.value.report.records[-1].offset < offset
    stopped = read_tlog(flipped, on_error="stop", types={"HEARTBEAT"})
    assert stopped.records_read == k and stopped.bad_offsets == [offset]
    skipped = read_tlog(flipped, on_error="skip", types={"HEARTBEAT"})
    assert skipped.records_read == len(logs["ardupilot"]) - 1 and skipped.bad_offsets == [offset]

    data = bytearray(ARDUPILOT_LOG.read_bytes())
    data[offset + 8] = 0x00  # the start marker itself: the frame's length is lost too
    marker = tmp_path / "marker.tlog"
    marker.write_bytes(bytes(data))
    with pytest.raises(TlogError, match=f"no MAVLink start marker.* at byte {offset} "):
        read_tlog(marker, types={"HEARTBEAT"})
    resumed = read_tlog(marker, on_error="skip", types={"LOCAL_POSITION_NED"})
    assert resumed.bad_offsets == [offset] and resumed.records_read == len(logs["ardupilot"]) - 1
    assert [r.offset for r in resumed] == [r.offset for r in logs["ardupilot"]
                                           if r.type == "LOCAL_POSITION_NED" and r.offset != offset]


def test_iterating_only_some_types(tmp_path: Path) -> None:
    report = TlogReport(PX4_LOG, 0)
    attitudes = [r for r in iter_tlog(PX4_LOG, types={"ATTITUDE"}, report=report)]
    assert len(attitudes) == 9668 and {r.type for r in attitudes} == {"ATTITUDE"}
    assert report.records_read == 62842 - 370 and sum(report.unknown_ids.values()) == 370
    with pytest.raises(FileNotFoundError, match=r"missing\.tlog"):
        read_tlog(tmp_path / "missing.tlog")
    with pytest.raises(ValueError, match="ATTITUDES"):
        read_tlog(PX4_LOG, types={"ATTITUDES"})
