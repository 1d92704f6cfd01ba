"""Fixtures shared by several test modules."""

from __future__ import annotations

import numpy as np
import pytest

from dreamlink.demo import QUAD_PLANNER
from dreamlink.spec import QUAD


@pytest.fixture(scope="session")
def quad_bundle(tmp_path_factory):
    """A small ArduPilot-flavour quad world model learned from two 40 s lockstep SITL flights (about a minute)."""
    from dreamlink.bundle import update_manifest
    from dreamlink.campaign.collect import QuadCollectConfig, collect_quad
    from dreamlink.export.pack import pack_bundle
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.learning.world_model import WorldModelConfig
    from dreamlink.sim.launcher import SitlProcess

    sets = []
    for seed in (1, 2):
        with SitlProcess("quad", lockstep=True, seed=seed, extra_args=("--flavour", "ardupilot")) as sitl, \
                Link(LinkConfig(sitl.connect_string)) as link:
            profile = make_profile(QUAD, link, "ardupilot", lockstep=True)
            profile.connect(timeout_s=30)
            d = collect_quad(profile, QUAD, QuadCollectConfig(seconds=40, seed=seed))
            sets.append(TransitionSet(d.spec, d.state, d.action, d.next_state, np.full(len(d), seed), d.meta))
    data = TransitionSet.concat(sets)
    config = WorldModelConfig(hidden=64, layers=2, ensemble_size=3, ignore_inputs=("pos_n_m", "pos_e_m", "pos_d_m",
                                                                                   "yaw_rad"))
    result = train_world_model(data, config, TrainConfig(epochs=20, seed=0))
    bundle, parity = pack_bundle(tmp_path_factory.mktemp("quad") / "bundle", QUAD, result.model)
    assert parity.ok
    return update_manifest(bundle, calibration={"planner": QUAD_PLANNER}).root
