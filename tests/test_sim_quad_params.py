"""The parameter protocol between the ArduPilot profile and the SITL: PARAM_SET is echoed by PARAM_VALUE, unknown
names get no answer, and the guided tuning the profile sets is what the simulated autopilot then flies with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dreamlink.sim.quadrotor.params import ParamTable, handle_param_message


def _msg(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_param_table_echoes_sets_reads_and_lists_and_ignores_unknown_names() -> None:
    table = ParamTable({"WP_ACC": 2.5, "PSC_JERK_NE": 5.0})
    sent: list[tuple[str, float, int, int]] = []

    def send(*v: object) -> None:
        sent.append(v)  # type: ignore[arg-type]

    assert handle_param_message("PARAM_SET", _msg(param_id=b"WP_ACC\x00\x00", param_value=4.0), table, send)
    assert sent == [("WP_ACC", 4.0, 2, 0)] and table["WP_ACC"] == 4.0
    handle_param_message("PARAM_SET", _msg(param_id="NO_SUCH", param_value=1.0), table, send)
    handle_param_message("PARAM_SET", _msg(param_id="WP_ACC", param_value=float("nan")), table, send)
    assert len(sent) == 1 and table["WP_ACC"] == 4.0  # neither changed anything nor answered
    handle_param_message("PARAM_REQUEST_READ", _msg(param_id="", param_index=1), table, send)
    handle_param_message("PARAM_REQUEST_READ", _msg(param_id="WP_ACC", param_index=-1), table, send)
    assert sent[1:] == [("PSC_JERK_NE", 5.0, 2, 1), ("WP_ACC", 4.0, 2, 0)]
    sent.clear()
    handle_param_message("PARAM_REQUEST_LIST", _msg(), table, send)
    assert [s[0] for s in sent] == ["WP_ACC", "PSC_JERK_NE"]
    assert not handle_param_message("HEARTBEAT", _msg(), table, send)


def test_ardupilot_guided_limits_follow_its_parameters() -> None:
    from dreamlink.sim.quadrotor.ardupilot import ArduCopterAutopilot
    from dreamlink.sim.quadrotor.autopilot import AutopilotConfig

    ap = ArduCopterAutopilot(AutopilotConfig("ardupilot"))
    assert ap.limits.accel_xy_mps2 == 2.5 and ap.limits.jerk_xy_mps3 == 5.0  # the log's defaults
    ap.params.set("WP_ACC", 5.0)
    ap.params.set("PSC_JERK_NE", 10.0)
    assert ap.limits.accel_xy_mps2 == 5.0 and ap.limits.jerk_xy_mps3 == 10.0


@pytest.mark.sitl
def test_the_ardupilot_profile_tunes_guided_over_mavlink_before_entering_it() -> None:
    from dreamlink.firmware_bridge.ardupilot import ArduPilotCopterProfile
    from dreamlink.firmware_bridge.link import Link, LinkConfig, LinkTimeout
    from dreamlink.firmware_bridge.params import set_param
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.spec import QUAD

    with SitlProcess("quad", lockstep=True, seed=3, extra_args=("--flavour", "ardupilot")) as sitl, \
            Link(LinkConfig(sitl.connect_string)) as link:
        profile = make_profile(QUAD, link, "ardupilot", lockstep=True)
        profile.connect(timeout_s=30)
        profile.enter_control_mode()
        assert profile.mode == "GUIDED"
        # read back what the autopilot now holds
        for name, value in ArduPilotCopterProfile.GUIDED_TUNING.items():
            assert set_param(link, 1, 1, name, value) == value
        with pytest.raises(LinkTimeout, match="NO_SUCH_PARAM"):
            set_param(link, 1, 1, "NO_SUCH_PARAM", 1.0, timeout_s=0.2, retries=0)
