"""Campaign files are validated before any flight: a bad key, range or fault is refused by name, and a
flight's draw depends only on (campaign seed, flight index)."""

from __future__ import annotations

import pytest

from dreamlink.campaign.cli_commands import main
from dreamlink.campaign.report import success_by_parameter, wilson_interval
from dreamlink.campaign.spec import CampaignError, draw_flight, load_campaign, parse_campaign

GOOD = """
[campaign]
flights = 12
seed = 7
control = "baseline"

[mission]
laps = 0.25

[randomise]
mass_scale = [0.9, 1.1]
wind_speed_mps = 1.5

[faults]
probability = 1.0
to_runtime = { drop_rate = [0.0, 0.05], delay_ms = [5, 10] }
"""


def test_a_good_file_reads_back_with_its_ranges_and_draws_reproducibly(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    spec = load_campaign(path)
    assert (spec.flights, spec.seed, spec.control, spec.mission.laps) == (12, 7, "baseline", 0.25)
    a, b, other = draw_flight(spec, 3), draw_flight(spec, 3), draw_flight(spec, 4)
    assert a == b and a.seed != other.seed
    assert 0.9 <= a.domain.mass_scale <= 1.1
    assert a.params()["wind_speed_mps"] == pytest.approx(1.5)
    assert "delay_ms=" in a.faults["to_runtime"] and a.faults["to_vehicle"] == ""
    assert spec.digest() == parse_campaign({**_toml(GOOD), "campaign": {**_toml(GOOD)["campaign"],
                                                                          "flights": 99}}).digest()


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize("text, key", [
    ("[campaign]\nflightz = 3\n", "flightz"),
    ("[mision]\nlaps = 1\n", "mision"),
    ("[randomise]\nmass_scale = [-0.5, 1.0]\n", "randomise.mass_scale"),
    ("[randomise]\ndrag_scale = [1.4, 0.7]\n", "randomise.drag_scale"),
    ("[randomise]\ngravity = [9, 10]\n", "gravity"),
    ("[faults]\nto_runtime = { teleport_rate = [0, 1] }\n", "teleport_rate"),
    ("[faults]\nto_vehicle = { drop_rate = [0, 2] }\n", "faults.to_vehicle.drop_rate"),
    ("[faults]\nprobability = -0.1\n", "faults.probability"),
    ("[mission]\nlaps = -1\n", "mission.laps"),
    ("[campaign]\nautopilot = \"betaflight\"\n", "campaign.autopilot"),
])
def test_a_bad_campaign_file_is_refused_naming_the_key_before_any_flight(tmp_path, capsys, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CampaignError, match=key):
        load_campaign(path)
    out = tmp_path / "campaign"
    code = main(["campaign", "eval", "--campaign", str(path), "--bundle", str(tmp_path), "--out", str(out)])
    assert code == 2 and key in capsys.readouterr().err
    assert not out.exists()  # refused before the folder, Ray or any flight


def test_wilson_interval_and_binned_success_rates():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35  # the textbook 0/10 upper bound, 0.278
    low, high = wilson_interval(180, 200)
    assert low < 0.9 < high and high - low < 0.1
    rows = [{"w": float(i), "outcome": "success" if i < 5 else "failure"} for i in range(10)]
    bins = success_by_parameter(rows, "w", bins=2)
    assert [b["rate"] for b in bins] == [1.0, 0.0] and [b["n"] for b in bins] == [5, 5]


def test_results_table_drops_a_row_torn_by_a_crash_and_keeps_the_rest(tmp_path):
    from dreamlink.campaign.table import ResultsTable

    path = tmp_path / "results.csv"
    table = ResultsTable(path)
    table.append({"index": 0, "seed": 5, "outcome": "success", "tracking_rmse_m": 0.25, "landed": True})
    with open(path, "a") as f:
        f.write("1,6,succ")  # killed mid-write
    rows = ResultsTable(path).recorded()
    assert list(rows) == [0] and rows[0]["tracking_rmse_m"] == 0.25 and rows[0]["landed"] is True


def test_collected_shards_load_as_one_set_and_a_tampered_shard_is_refused(tmp_path):
    import hashlib
    import json

    import numpy as np

    from dreamlink.campaign.shards import load_shards
    from dreamlink.learning.transitions import TransitionError, TransitionSet
    from dreamlink.spec import QUAD

    entries = []
    for flight in (0, 1):
        n = 5 + flight
        data = TransitionSet(QUAD, np.zeros((n, QUAD.state_dim), np.float32), np.zeros((n, QUAD.action_dim),
                             np.float32), np.ones((n, QUAD.state_dim), np.float32), np.full(n, flight))
        path = data.save(tmp_path / f"shard-{flight:04d}.npz")
        entries.append({"file": path.name, "flight": flight, "seed": flight, "transitions": n,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema": 1, "vehicle": "quad", "shards": entries}))
    union = load_shards(manifest)
    assert len(union) == 11 and union.n_episodes == 2
    (tmp_path / "shard-0001.npz").write_bytes(b"not the shard")
    with pytest.raises(TransitionError, match="sha256 mismatch"):
        load_shards(manifest)
