"""The quad demo's bookkeeping: folder tags per world model and the paired seed table of `make activation-study`."""

from __future__ import annotations

from dreamlink.quad_demo import QuadDemoConfig, paired_seed_table


def _rows(flavour: str, rmse: dict[int, float | None]) -> list[dict[str, object]]:
    return [{"autopilot": flavour, "seed": s, "tracking_rmse_m": v, "landed_disarmed": v is not None}
            for s, v in rmse.items()]


def test_tags_keep_each_world_model_in_its_own_folder() -> None:
    assert QuadDemoConfig().tag == ""  # the demo's own model: the folders `make demo-quad` always used
    assert QuadDemoConfig(activation="relu").tag == "-relu"
    assert QuadDemoConfig(hidden=256, activation="silu").tag == "-h256-silu"


def test_paired_table_compares_on_the_seeds_both_flew() -> None:
    tables = {"silu": _rows("px4", {1: 0.10, 2: 0.20, 3: 0.30}),
              "relu": _rows("px4", {1: 0.12, 2: 0.18, 3: None})}  # seed 3 did not land for relu
    lines = paired_seed_table(tables).splitlines()
    assert lines[0].startswith("| autopilot | world model |") and "mean / silu" in lines[0]
    silu = next(line for line in lines if "| silu |" in line)
    relu = next(line for line in lines if "| relu |" in line)
    assert "| 3 | 3 | 0.200 | 0.200 | 0.300 | 1.00 |" in silu
    # relu: 2 flights landed of 3; over seeds 1-2 its mean is (0.12 + 0.18) / (0.10 + 0.20) = 1.00x, better on 1 of 2
    assert "| 3 | 2 | 0.150 | 0.180 | 0.180 | 1.00 | 1/2 |" in relu
