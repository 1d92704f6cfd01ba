"""The mission protocol over real UDP: a ground station (pymavlink's mavutil and mavwp, its own process, as MAVProxy
does it) uploads a mission and a fence into dreamlink's SITL flight controller, and dreamlink's Link downloads both.

The vehicle, the ground station and dreamlink meet through a small MAVLink router in the test (the job mavlink-router
does on a companion computer), which can also lose chosen frames on their way to dreamlink. This file is also the
ground station: `python tests/test_mission_protocol.py --gcs udpin:127.0.0.1:PORT --plan plan.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

import pytest

from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.mission_items import MISSION_TYPE_FENCE, MISSION_TYPE_MISSION, MissionItem
from dreamlink.firmware_bridge.mission_protocol import (
    MissionProtocolError,
    download,
    read_origin,
    upload,
)
from dreamlink.sim.launcher import SitlProcess, free_udp_port
from dreamlink.sim.mavlink_udp import new_parser

MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_CHANGE_SPEED = 178
MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION = 5002
MAV_FRAME_GLOBAL = 0
MAV_FRAME_MISSION = 2
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6
GLOBAL_FRAMES = (0, 3, 5, 6, 10, 11)


def _deg(value: float) -> float:
    """Degrees as MISSION_ITEM_INT carries them (1e-7), so what goes up can come down equal."""
    return round(value * 1e7) / 1e7


def plan_around(home: tuple[float, float, float]) -> tuple[list[MissionItem], list[MissionItem]]:
    """A 7-item survey-like mission and a 4-vertex exclusion fence near `home` (lat deg, lon deg, alt m AMSL), as
    MAVProxy would send them: seq 0 is the home slot ArduPilot fills itself, fence items in MAV_FRAME_GLOBAL with
    autocontinue 0. Numbers are exact in MAVLink's float32 and degE7, so they can come back equal."""
    lat, lon, alt = home
    step = 1e-4  # about 11 m
    rel = MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
    mission = [
        MissionItem(0, MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL, x=_deg(lat), y=_deg(lon), z=float(round(alt))),
        MissionItem(1, MAV_CMD_NAV_TAKEOFF, rel, x=_deg(lat), y=_deg(lon), z=10.0),
        MissionItem(2, MAV_CMD_NAV_WAYPOINT, rel, param1=2.0, x=_deg(lat + 3 * step), y=_deg(lon), z=15.0),
        MissionItem(3, MAV_CMD_DO_CHANGE_SPEED, MAV_FRAME_MISSION, param1=1.0, param2=4.0, param3=-1.0),
        MissionItem(4, MAV_CMD_NAV_WAYPOINT, rel, x=_deg(lat + 3 * step), y=_deg(lon + 4 * step), z=15.0),
        MissionItem(5, MAV_CMD_NAV_WAYPOINT, rel, x=_deg(lat), y=_deg(lon + 4 * step), z=12.0),
        MissionItem(6, MAV_CMD_NAV_RETURN_TO_LAUNCH, MAV_FRAME_MISSION),
    ]
    corners = ((1, 1), (1, 2), (2, 2), (2, 1))  # a keep-out square inside the survey
    fence = [MissionItem(i, MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION, MAV_FRAME_GLOBAL, param1=4.0,
                         x=_deg(lat + n * step), y=_deg(lon + e * step), autocontinue=False,
                         mission_type=MISSION_TYPE_FENCE) for i, (n, e) in enumerate(corners)]
    return mission, fence


def plan_json(mission: list[MissionItem], fence: list[MissionItem]) -> str:
    return json.dumps({"mission": [asdict(i) for i in mission], "fence": [asdict(i) for i in fence]})


# What the real autopilots answered for this plan (ArduCopter 4.8-dev and PX4 1.16 SITL, uploaded by this ground
# station, see mission_protocol's docstring): the frame number each uploaded frame comes back as.
FRAME_ANSWERED = {"ardupilot": {MAV_FRAME_GLOBAL: 0, MAV_FRAME_MISSION: 0, MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: 3},
                  "px4": {MAV_FRAME_GLOBAL: 5, MAV_FRAME_MISSION: 2, MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: 6}}
VEHICLE = (1, 1)  # the SITL flight controller's system and component


# -- a MAVLink router on loopback -------------------------------------------------------------------------------------

class Router:
    """What the vehicle sends goes to every client, what a client sends goes to the vehicle (mavlink-router's job).

    `lose(client, rule, times)` drops the next `times` datagrams from the vehicle to `client` holding a frame that
    `rule(msg)` picks. `heard` lists the mission frames each side sent: ("vehicle->gcs", "MISSION_COUNT", seq, type).
    """

    def __init__(self, vehicle_port: int, vehicle_address: tuple[str, int], clients: dict[str, int]) -> None:
        self.vehicle_address = vehicle_address
        self.vehicle_side = _udp_socket(vehicle_port)
        self.client_sides = {name: (_udp_socket(0), ("127.0.0.1", port)) for name, port in clients.items()}
        self.heard: list[tuple[str, str, int, int]] = []
        self.lost: list[tuple[str, str, int]] = []
        self._rules: list[list[Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mavlink router", daemon=True)

    def __enter__(self) -> Router:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for sock in (self.vehicle_side, *(s for s, _ in self.client_sides.values())):
            sock.close()

    def reset(self) -> None:
        """Forget what was heard and lost and every rule (one test's traffic is not the next one's)."""
        with self._lock:
            self.heard, self.lost, self._rules = [], [], []

    def lose(self, client: str, rule: Callable[[Any], bool], times: int = 1) -> None:
        with self._lock:
            self._rules.append([client, rule, times])

    def count(self, direction: str, msg_types: tuple[str, ...], seq: int, mission_type: int) -> int:
        with self._lock:
            return sum(1 for d, t, s, m in self.heard if d == direction and t in msg_types and (s, m) == (seq,
                                                                                                      mission_type))

    def _run(self) -> None:
        parsers = {sock: new_parser() for sock in (self.vehicle_side, *(s for s, _ in self.client_sides.values()))}
        names = {sock: name for name, (sock, _) in self.client_sides.items()}
        while not self._stop.is_set():
            for sock in select.select(list(parsers), [], [], 0.05)[0]:
                try:
                    data = sock.recv(65536)
                except OSError:
                    continue
                msgs = [m for m in parsers[sock].parse_buffer(data) or [] if m.get_type() != "BAD_DATA"]
                if sock is not self.vehicle_side:
                    self._note(f"{names[sock]}->vehicle", msgs)
                    self.vehicle_side.sendto(data, self.vehicle_address)
                    continue
                for name, (client_sock, address) in self.client_sides.items():
                    if self._loses(name, msgs):
                        continue
                    self._note(f"vehicle->{name}", msgs)
                    client_sock.sendto(data, address)

    def _note(self, direction: str, msgs: list[Any]) -> None:
        with self._lock:
            self.heard += [(direction, m.get_type(), int(getattr(m, "seq", -1)), int(m.mission_type))
                           for m in msgs if m.get_type().startswith("MISSION_") and hasattr(m, "mission_type")]

    def _loses(self, client: str, msgs: list[Any]) -> bool:
        with self._lock:
            for rule in self._rules:
                if rule[0] == client and rule[2] > 0 and any(rule[1](m) for m in msgs):
                    rule[2] -= 1
                    self.lost += [(client, m.get_type(), int(getattr(m, "seq", -1))) for m in msgs]
                    return True
        return False


def _udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


def item_frame(msg_type: str, seq: int, mission_type: int = MISSION_TYPE_MISSION) -> Callable[[Any], bool]:
    def rule(msg: Any) -> bool:
        return bool(msg.get_type() == msg_type and msg.seq == seq and msg.mission_type == mission_type)
    return rule


# -- the vehicle, a ground station and dreamlink ----------------------------------------------------------------------

@dataclass
class Field:
    flavour: str
    router: Router
    link: Link
    gcs_port: int

    def ground_station_uploads(self, mission: list[MissionItem], fence: list[MissionItem], tmp: Path) -> dict[str, Any]:
        """Run the ground station as its own process; returns what it printed."""
        plan = tmp / "plan.json"
        plan.write_text(plan_json(mission, fence))
        repo = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, __file__, "--gcs", f"udpin:127.0.0.1:{self.gcs_port}", "--plan",
                               str(plan)], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module", params=["ardupilot", "px4"])
def vehicle_field(request: pytest.FixtureRequest) -> Iterator[Field]:
    """One SITL flight controller per flavour for the module, behind the router, with dreamlink's Link on it."""
    flavour = request.param
    with SitlProcess("quad", extra_args=("--flavour", flavour, "--nominal")) as sitl:
        assert sitl.vehicle_address is not None
        ports = {"dreamlink": free_udp_port(), "gcs": free_udp_port()}
        with Router(sitl.port, sitl.vehicle_address, ports) as router, \
                Link(LinkConfig(f"udp:127.0.0.1:{ports['dreamlink']}")) as link:
            assert link.wait_for("HEARTBEAT", 5.0) is not None
            yield Field(flavour, router, link, ports["gcs"])


@pytest.fixture
def field(vehicle_field: Field) -> Field:
    vehicle_field.router.reset()
    return vehicle_field


# -- tests ------------------------------------------------------------------------------------------------------------

@pytest.mark.sitl
def test_mission_and_fence_from_a_ground_station_download_item_by_item_and_a_lost_item_is_asked_again(
        field: Field, tmp_path: Path) -> None:
    origin = read_origin(field.link, *VEHICLE)
    assert origin.source == "GPS_GLOBAL_ORIGIN"
    mission, fence = plan_around(origin[:3])
    gcs = field.ground_station_uploads(mission, fence, tmp_path)
    assert (gcs["mission"], gcs["fence"]) == ("MAV_MISSION_ACCEPTED", "MAV_MISSION_ACCEPTED")
    asked = "MISSION_REQUEST" if field.flavour == "ardupilot" else "MISSION_REQUEST_INT"  # as each real one asks
    assert gcs["requests"]["mission"][1:] == [f"{asked} {seq}" for seq in range(1, 7)]

    field.router.lose("dreamlink", item_frame("MISSION_ITEM_INT", 3))  # the first copy of item 3 never arrives
    got = download(field.link, *VEHICLE, MISSION_TYPE_MISSION)
    got_fence = download(field.link, *VEHICLE, MISSION_TYPE_FENCE)

    answered = FRAME_ANSWERED[field.flavour]
    expected = [replace(item, frame=answered[item.frame]) for item in mission]
    if field.flavour == "ardupilot":  # seq 0 is the autopilot's home, whatever the ground station put there
        home = got[0]
        assert (home.command, home.frame, home.x, home.y) == (MAV_CMD_NAV_WAYPOINT, 0, origin.lat_deg,
                                                               origin.lon_deg)
        assert home.z == pytest.approx(origin.alt_m, abs=1e-3)
        expected[0] = home
    assert got == expected
    assert got_fence == [replace(item, frame=answered[item.frame]) for item in fence]
    assert got_fence[0].param1 == 4 and got_fence[0].command == MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
    assert field.router.lost == [("dreamlink", "MISSION_ITEM_INT", 3)]
    assert field.router.count("dreamlink->vehicle", ("MISSION_REQUEST_INT",), 3, MISSION_TYPE_MISSION) == 2
    assert field.router.count("dreamlink->vehicle", ("MISSION_REQUEST_INT",), 2, MISSION_TYPE_MISSION) == 1


@pytest.mark.sitl
def test_dreamlink_uploads_like_a_ground_station_and_the_autopilot_asks_again_for_a_lost_request(
        field: Field) -> None:
    origin = read_origin(field.link, *VEHICLE)
    mission, fence = plan_around(origin[:3])
    mission = mission[:5]
    asked = "MISSION_REQUEST" if field.flavour == "ardupilot" else "MISSION_REQUEST_INT"
    field.router.lose("dreamlink", item_frame(asked, 2))  # the autopilot must ask again (ArduPilot 1 s, PX4 0.25 s)

    upload(field.link, *VEHICLE, mission, MISSION_TYPE_MISSION)
    upload(field.link, *VEHICLE, fence[:3], MISSION_TYPE_FENCE)

    requests = ("MISSION_REQUEST", "MISSION_REQUEST_INT")
    assert field.router.count("vehicle->dreamlink", requests, 2, MISSION_TYPE_MISSION) == 1  # the second one
    got = download(field.link, *VEHICLE, MISSION_TYPE_MISSION)
    assert len(got) == 5 and got[1:] == [replace(i, frame=FRAME_ANSWERED[field.flavour][i.frame]) for i in mission[1:]]
    assert len(download(field.link, *VEHICLE, MISSION_TYPE_FENCE)) == 3


@pytest.mark.sitl
def test_an_item_that_never_arrives_fails_the_download_naming_the_request_and_the_seq(field: Field) -> None:
    origin = read_origin(field.link, *VEHICLE)
    mission, _ = plan_around(origin[:3])
    upload(field.link, *VEHICLE, mission, MISSION_TYPE_MISSION)
    field.router.lose("dreamlink", item_frame("MISSION_ITEM_INT", 2), times=3)

    with pytest.raises(MissionProtocolError) as failed:
        download(field.link, *VEHICLE, MISSION_TYPE_MISSION, timeout_s=0.2, retries=2)
    assert (failed.value.step, failed.value.seq) == ("MISSION_REQUEST_INT", 2)
    assert "MISSION_REQUEST_INT seq 2 got no MISSION_ITEM_INT after 3 tries" in str(failed.value)
    assert download(field.link, *VEHICLE, MISSION_TYPE_MISSION)[2] is not None  # the next download is whole again


def test_a_peer_that_never_answers_fails_the_download_at_the_request_list() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with Link(LinkConfig(f"udpout:127.0.0.1:{silent.getsockname()[1]}", heartbeat_period_s=0)) as link:
            started = time.monotonic()
            with pytest.raises(MissionProtocolError) as failed:
                download(link, *VEHICLE, MISSION_TYPE_FENCE, timeout_s=0.2, retries=2)
    assert (failed.value.step, failed.value.seq, failed.value.received) == ("MISSION_REQUEST_LIST", None, ())
    assert str(failed.value).startswith("download fence from 1/1: MISSION_REQUEST_LIST got no MISSION_COUNT after "
                                        "3 tries of 0.20 s (nothing came instead)")
    assert 0.5 < time.monotonic() - started < 2.0


# -- the ground station (its own process) -----------------------------------------------------------------------------

def ground_station_upload(connect: str, plan: dict[str, list[dict[str, Any]]],
                          timeout_s: float = 30.0) -> dict[str, Any]:
    """Upload each list of `plan` ({"mission": [...], "fence": [...]}, MissionItem fields) the way MAVProxy's wp and
    fence modules do: mavwp loaders of MISSION_ITEM_INT, MISSION_COUNT, every MISSION_REQUEST(_INT) answered with its
    item, until the autopilot's MISSION_ACK. Returns {kind: ack name, "requests": {kind: ["MISSION_REQUEST 0", ...]}}.
    """
    from pymavlink import mavutil, mavwp

    mav = mavutil.mavlink
    conn = mavutil.mavlink_connection(connect, source_system=255, source_component=190)  # as QGroundControl
    try:
        conn.mav.heartbeat_send(mav.MAV_TYPE_GCS, mav.MAV_AUTOPILOT_INVALID, 0, 0, 0)
        if conn.wait_heartbeat(timeout=timeout_s) is None:
            raise SystemExit(f"ground station: no HEARTBEAT on {connect}")
        target = (conn.target_system, conn.target_component)
        result: dict[str, Any] = {"requests": {}}
        loaders = {"mission": mavwp.MAVWPLoader(*target), "fence": mavwp.MissionItemProtocol_Fence(*target)}
        for kind, loader in loaders.items():
            for fields in plan.get(kind, []):
                scale = 1e7 if fields["frame"] in GLOBAL_FRAMES else 1.0
                loader.add(mav.MAVLink_mission_item_int_message(
                    *target, fields["seq"], fields["frame"], fields["command"], 0, int(fields["autocontinue"]),
                    fields["param1"], fields["param2"], fields["param3"], fields["param4"],
                    round(fields["x"] * scale), round(fields["y"] * scale), fields["z"], loader.mav_mission_type()))
            asked: list[str] = []
            conn.mav.mission_count_send(*target, loader.count(), loader.mav_mission_type())
            deadline = time.monotonic() + timeout_s
            while True:
                msg = conn.recv_match(type=["MISSION_REQUEST", "MISSION_REQUEST_INT", "MISSION_ACK"], blocking=True,
                                      timeout=max(0.0, deadline - time.monotonic()))
                if msg is None:
                    raise SystemExit(f"ground station: {kind} upload stalled after requests {asked}")
                if msg.mission_type != loader.mav_mission_type() or msg.target_system not in (0, 255):
                    continue
                if msg.get_type() == "MISSION_ACK":
                    result[kind] = mav.enums["MAV_MISSION_RESULT"][msg.type].name
                    break
                asked.append(f"{msg.get_type()} {msg.seq}")
                item = loader.wp(msg.seq)
                item.target_system, item.target_component = target
                conn.mav.send(item)
            result["requests"][kind] = asked
        return result
    finally:
        conn.close()


def _gcs_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="a ground station that uploads a mission and a fence, then exits")
    parser.add_argument("--gcs", required=True, metavar="CONNECT", help="pymavlink connect string, e.g. udpin:...")
    parser.add_argument("--plan", required=True, type=Path, help='JSON {"mission": [...], "fence": [...]}')
    args = parser.parse_args(argv)
    result = ground_station_upload(args.gcs, json.loads(args.plan.read_text()))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_gcs_main(sys.argv[1:]))
