"""Regenerate dreamlink's MAVLink dialect: `python -m dreamlink.firmware_bridge.dialect.generate` (`make dialect`).

Why a dialect of our own: pymavlink's `ardupilotmega` module carries ~300 messages and every enum
with its documentation, 6.6 MB of RSS once imported (this one: 1.5 MB) in an onboard process whose
budget is 80 MB; the link decodes the ~20 messages below. Three files come out of one run, all
committed:

- `dreamlink.xml`: the messages and enums below, copied element for element from the XML
  definitions pymavlink ships (minimal, standard, common, ardupilotmega), so every field, its
  order and type, and therefore every message id and CRC_EXTRA, is what real autopilots use.
  This run checks that against pymavlink's `all` dialect and refuses to write otherwise.
- `dreamlink_v20.py`: pymavlink's own generator (mavgen, MAVLink 2, Python) run on that XML.
- `known_ids.py`: id -> (name, CRC_EXTRA) of every message pymavlink's `all` dialect knows, so the
  link can check the CRC of a frame it does not decode (then log it as received, or count it bad)
  and knows which of those are commands (signing policy), without importing `all` (19 MB).

To decode one more message: add its name to MESSAGES (and any enum whose constants code uses to
ENUMS), run this, commit the three files. A test fails if firmware_bridge or runtime code names a
message the dialect lacks.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
XML_NAME = "dreamlink.xml"
MODULE_NAME = "dreamlink_v20.py"
KNOWN_IDS_NAME = "known_ids.py"
SOURCES = ("minimal.xml", "standard.xml", "common.xml", "ardupilotmega.xml")  # pymavlink's, in include order

# Every message a profile, the link, the runtime or a test through the link encodes or decodes.
MESSAGES = (
    # link, heartbeats, commands, time
    "HEARTBEAT", "COMMAND_LONG", "COMMAND_INT", "COMMAND_ACK", "TIMESYNC", "STATUSTEXT", "SETUP_SIGNING",
    "NAMED_VALUE_FLOAT",
    # parameters (params.py) and ArduPilot's stream requests
    "PARAM_SET", "PARAM_VALUE", "PARAM_REQUEST_READ", "PARAM_REQUEST_LIST", "REQUEST_DATA_STREAM",
    # flight-controller telemetry the profiles turn into a state and health (messages.py, autopilot_telemetry.py)
    "SYS_STATUS", "EXTENDED_SYS_STATE", "LOCAL_POSITION_NED", "ATTITUDE", "EKF_STATUS_REPORT", "ESTIMATOR_STATUS",
    # setpoints / actuator targets the profiles send
    "SET_POSITION_TARGET_LOCAL_NED", "SET_ACTUATOR_CONTROL_TARGET",
    # the cart-pole motor board's state
    "DEBUG_FLOAT_ARRAY",
    # what a vehicle file's board may stream its state in, or be driven by (spec.Source, firmware_bridge/motor_board)
    "MANUAL_CONTROL", "DEBUG", "DEBUG_VECT", "SCALED_IMU", "RAW_IMU", "SERVO_OUTPUT_RAW", "RC_CHANNELS", "VFR_HUD",
    "ACTUATOR_CONTROL_TARGET",
    # which vehicle a bundle learned (firmware_bridge/vehicle_id.py)
    "AUTOPILOT_VERSION",
    # missions: the mission protocol (download/upload of MISSION and FENCE items), the origin the autopilot's
    # local frame hangs from, progress as autopilots report it, and "go here" from a ground station's map
    "MISSION_REQUEST_LIST", "MISSION_COUNT", "MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ITEM_INT",
    "MISSION_ITEM", "MISSION_ACK", "MISSION_CURRENT", "MISSION_ITEM_REACHED",
    "MISSION_SET_CURRENT", "HOME_POSITION", "GPS_GLOBAL_ORIGIN", "SET_POSITION_TARGET_GLOBAL_INT",
    "POSITION_TARGET_GLOBAL_INT", "POSITION_TARGET_LOCAL_NED",
)

# Enums whose constants code uses (`mavlink.MAV_...`) or whose names it prints (`mavlink.enums[...]`);
# each with all its entries from every source file (MAV_CMD gets ArduPilot's commands too).
ENUMS = (
    "MAV_AUTOPILOT", "MAV_TYPE", "MAV_STATE", "MAV_MODE_FLAG", "MAV_CMD", "MAV_RESULT", "MAV_FRAME",
    "MAV_SEVERITY", "MAV_LANDED_STATE", "MAV_VTOL_STATE", "MAV_SYS_STATUS_SENSOR", "MAV_DATA_STREAM",
    "POSITION_TARGET_TYPEMASK", "MAV_PARAM_TYPE", "EKF_STATUS_FLAGS", "ESTIMATOR_STATUS_FLAGS",
    "MAV_MISSION_TYPE", "MAV_MISSION_RESULT",
)

# MAV_CMD, the one big enum (~200 commands, 7 parameters each): only the commands dreamlink sends or
# names in its logs (`command_name`); any other still travels as a number.
MAV_CMDS = (
    "MAV_CMD_COMPONENT_ARM_DISARM", "MAV_CMD_DO_SET_MODE", "MAV_CMD_NAV_TAKEOFF", "MAV_CMD_NAV_LAND",
    "MAV_CMD_NAV_RETURN_TO_LAUNCH", "MAV_CMD_NAV_LOITER_UNLIM", "MAV_CMD_DO_FLIGHTTERMINATION",
    "MAV_CMD_DO_CHANGE_SPEED", "MAV_CMD_DO_REPOSITION", "MAV_CMD_SET_MESSAGE_INTERVAL", "MAV_CMD_REQUEST_MESSAGE",
    "MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES", "MAV_CMD_PREFLIGHT_CALIBRATION", "MAV_CMD_USER_1",
    # missions: what a mission file or the autopilot's store holds, and what a ground station sends mid-flight
    "MAV_CMD_NAV_WAYPOINT", "MAV_CMD_DO_PAUSE_CONTINUE", "MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION",
    "MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION", "MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION",
    "MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION", "MAV_CMD_NAV_RALLY_POINT", "MAV_CMD_DO_SET_HOME",
)


def _header(made_from: str) -> str:
    from importlib import metadata

    return ("# ruff: noqa\n# mypy: ignore-errors\n# Generated by dreamlink/firmware_bridge/dialect/generate.py "
            f"(`make dialect`) {made_from}, pymavlink {metadata.version('pymavlink')}; do not edit.\n")


def _pymavlink_xml_dir() -> Path:
    from pymavlink.dialects import v20

    return Path(v20.__file__).resolve().parent


def _strip_docs(element: ET.Element) -> None:
    """Drop descriptions and parameter docs (mavlink.io has them): the generated module keeps names, ids,
    types and units. Less code is less memory where Python compiles it at start-up (no bytecode cache
    written, PYTHONDONTWRITEBYTECODE): with MAV_CMD cut down too, 6 MB there instead of 18."""
    for parent in element.iter():
        for child in [c for c in parent if c.tag in ("description", "param", "deprecated", "wip")]:
            parent.remove(child)
    for node in element.iter("field"):
        node.text = None


def build_xml(source_dir: Path) -> ET.Element:
    """The dialect's XML: the MESSAGES and ENUMS elements, copied from pymavlink's definitions."""
    messages: dict[str, ET.Element] = {}
    enums: dict[str, ET.Element] = {}
    for name in SOURCES:
        root = ET.parse(source_dir / name).getroot()
        for msg in root.iter("message"):
            if msg.get("name") in MESSAGES:
                messages.setdefault(str(msg.get("name")), copy.deepcopy(msg))
        for enum in root.iter("enum"):
            ename = str(enum.get("name"))
            if ename not in ENUMS:
                continue
            if ename == "MAV_CMD":
                for entry in [e for e in enum if e.tag == "entry" and e.get("name") not in MAV_CMDS]:
                    enum.remove(entry)
            if ename not in enums:
                enums[ename] = copy.deepcopy(enum)
                continue
            have = {e.get("name") for e in enums[ename].iter("entry")}
            for entry in enum.iter("entry"):  # a later file extends the enum (ArduPilot's MAV_CMDs)
                if entry.get("name") not in have:
                    enums[ename].append(copy.deepcopy(entry))
    for element in (*messages.values(), *enums.values()):
        _strip_docs(element)
    missing = sorted(set(MESSAGES) - set(messages)) + sorted(set(ENUMS) - set(enums))
    missing += sorted(set(MAV_CMDS) - {str(e.get("name")) for e in enums.get("MAV_CMD", ET.Element("enum"))})
    if missing:
        raise SystemExit(f"generate: {missing} not found in pymavlink's {', '.join(SOURCES)}")
    root = ET.Element("mavlink")
    ET.SubElement(root, "version").text = "3"
    ET.SubElement(root, "dialect").text = "0"
    enums_el = ET.SubElement(root, "enums")
    for ename in ENUMS:
        enums_el.append(enums[ename])
    messages_el = ET.SubElement(root, "messages")
    for msg in sorted(messages.values(), key=lambda m: int(str(m.get("id")))):
        messages_el.append(msg)
    ET.indent(root, "  ")
    return root


def _known_ids_source() -> str:
    from pymavlink.dialects.v20 import all as full

    rows = "".join(f"    {i}: ({c.msgname!r}, {c.crc_extra}),\n" for i, c in sorted(full.mavlink_map.items()))
    return (_header("from pymavlink's `all` dialect")
            + '"""Every message id pymavlink\'s `all` dialect knows: id -> (name, CRC_EXTRA)."""\n\n'
            + f"KNOWN_IDS: dict[int, tuple[str, int]] = {{\n{rows}}}\n")


def generate(out_dir: Path = HERE) -> str:
    """Write the three files into `out_dir`; returns what was written, in one line."""
    import importlib.util

    from pymavlink.dialects.v20 import all as full
    from pymavlink.generator import mavgen

    root = build_xml(_pymavlink_xml_dir())
    xml_path = out_dir / XML_NAME
    xml_path.write_text('<?xml version="1.0"?>\n<!-- ' + _header("from pymavlink's XML").splitlines()[2].lstrip("# ")
                        + " -->\n" + ET.tostring(root, encoding="unicode") + "\n")
    with tempfile.TemporaryDirectory(prefix="dreamlink-dialect-") as tmp:
        stem = Path(tmp) / MODULE_NAME.removesuffix(".py")
        opts = mavgen.Opts(str(stem), wire_protocol="2.0", language="Python3", validate=False)
        if not mavgen.mavgen(opts, [str(xml_path)]):
            raise SystemExit(f"generate: mavgen failed on {xml_path}")
        code = stem.with_suffix(".py").read_text()
    module_path = out_dir / MODULE_NAME
    module_path.write_text(_header("with pymavlink's mavgen from dreamlink.xml") + code)
    (out_dir / KNOWN_IDS_NAME).write_text(_known_ids_source())
    # Same ids, same CRC_EXTRA as pymavlink's full dialect, or real autopilots would not understand us.
    spec = importlib.util.spec_from_file_location("dreamlink_dialect_check", module_path)
    assert spec is not None and spec.loader is not None
    ours = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ours)
    for msg_id, cls in ours.mavlink_map.items():
        ref = full.mavlink_map.get(msg_id)
        if ref is None or (ref.msgname, ref.crc_extra) != (cls.msgname, cls.crc_extra):
            raise SystemExit(f"generate: {cls.msgname} ({msg_id}, CRC_EXTRA {cls.crc_extra}) differs from "
                             f"pymavlink's all dialect")
    return (f"wrote {xml_path.name}, {module_path.name} ({len(ours.mavlink_map)} messages), {KNOWN_IDS_NAME} "
            f"({len(full.mavlink_map)} ids) in {out_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the three files to")
    args = parser.parse_args(argv)
    print(generate(args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
