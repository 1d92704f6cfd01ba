# dreamlink: every workflow is a make target. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SEED ?= 0
ONBOARD := dreamlink/runtime dreamlink/firmware_bridge dreamlink/deploy dreamlink/bundle dreamlink/spec

.PHONY: venv demo demo-quad quad-seeds activation-study test lint unit bench image-test image-test-arm64 clean campaign faults dialect calibrate-quad real-sitl finetune-study byo-study

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/dreamlink demo cartpole --seed $(SEED)
	@echo "next: make demo-quad (the quadrotor, both autopilot flavours, about 6 min)"

lint: venv
	$(BIN)/ruff check dreamlink tests bench examples
	$(BIN)/mypy $(ONBOARD)

test: lint
	$(BIN)/pytest -q

# The fast layer: no SITL processes, no training.
unit: venv
	$(BIN)/pytest -q -m "not sitl and not slow"

BENCH_OUT ?= runs/bench
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,bench]"
	touch $@

# The planner benchmark (a command, not a test): 12-20 min on 2 cores; BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/.bench-installed
	$(PY) bench/planner_bench.py --out $(BENCH_OUT) $(BENCH_ARGS)

# A real Debian root filesystem (debootstrap, cached) with the overlay and the wheel: the runtime
# starts from the unit's own ExecStart inside it. Needs root; too slow for CI.
image-test: venv
	scripts/image-test.sh

# The quadrotor demo in real time (both autopilot flavours, wind 2 m/s), then 20 randomised lockstep seeds
# per flavour flown by planning with the same bundles: every flight must land; RMSE table in runs/demo-quad/seeds.md.
QUAD_ARGS ?= --flights 6 --seconds 60 --epochs 40
demo-quad: venv
	$(BIN)/dreamlink demo quad --out runs/demo-quad $(QUAD_ARGS) --laps 1.5

quad-seeds: venv
	$(BIN)/dreamlink demo quad --out runs/demo-quad $(QUAD_ARGS) --reuse --lockstep-seeds 20 --laps 1

# The world model's activation decided by flights: the demo's recipe and data, one world model per
# activation, 10 paired lockstep seeds per autopilot; runs/activation-study/seeds-paired.md. About 12 min from
# scratch (data collection included); ACTIVATION_ARGS="--hidden 256 --autopilot px4" for the benchmark's width.
ACTIVATION_OUT ?= runs/activation-study
ACTIVATION_ARGS ?=
activation-study: venv
	for act in silu relu; do \
	  $(BIN)/dreamlink demo quad --out $(ACTIVATION_OUT) $(QUAD_ARGS) --reuse --lockstep-seeds 10 --laps 1 \
	    --activation $$act $(ACTIVATION_ARGS) || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info runs

# The same in an arm64 Debian root filesystem under qemu-user: aarch64 wheels from PyPI, doctor,
# install-bundle, and a lockstep cart-pole flight against the host's SITL. Needs root; 10-15 min.
image-test-arm64: venv
	scripts/image-test-arm64.sh

# Randomised lockstep quadrotor flights through a local Ray (dreamlink/campaign/quad_figure8.toml): a bundle
# made here (a `campaign collect` of 4 flights, then trained and exported, cached in $(CAMPAIGN_DIR)/bundle),
# then CAMPAIGN_FLIGHTS flights, the first CAMPAIGN_SERIAL one at a time and the rest two at a time, so the
# run prints flights/minute with 1 and with 2 workers and their ratio; then the success rate with its 95 %
# interval, the table, report and plots in $(CAMPAIGN_DIR)/eval. ~30-40 min on 2 cores.
CAMPAIGN_DIR ?= runs/campaign
CAMPAIGN_FILE ?= dreamlink/campaign/quad_figure8.toml
CAMPAIGN_FLIGHTS ?= 200
CAMPAIGN_SERIAL ?= 30
CAMPAIGN := $(BIN)/dreamlink campaign
$(CAMPAIGN_DIR)/bundle/manifest.json: $(VENV)/.installed $(CAMPAIGN_FILE)
	$(CAMPAIGN) collect --campaign $(CAMPAIGN_FILE) --flights 4 --seconds 40 --num-cpus 2 --out $(CAMPAIGN_DIR)/collect
	$(CAMPAIGN) bundle --data $(CAMPAIGN_DIR)/collect/data/manifest.json --out $(CAMPAIGN_DIR)/bundle --epochs 30

campaign: $(CAMPAIGN_DIR)/bundle/manifest.json
	rm -rf $(CAMPAIGN_DIR)/eval
	$(CAMPAIGN) eval --campaign $(CAMPAIGN_FILE) --bundle $(CAMPAIGN_DIR)/bundle --flights $(CAMPAIGN_FLIGHTS) \
		--num-cpus 2 --first-serial $(CAMPAIGN_SERIAL) --max-concurrent 2 --out $(CAMPAIGN_DIR)/eval

# The fault matrix (a command, not a test): one lockstep quad flight per fault kind and rate, the table into
# runs/faults/faults.md and faults.json. Trains its quad bundle once (cached in runs/faults/bundles).
FAULTS_OUT ?= runs/faults
faults: venv
	$(PY) -m dreamlink.campaign.faults --out $(FAULTS_OUT) $(FAULTS_ARGS)

# dreamlink's MAVLink dialect (the messages the onboard link decodes), regenerated with pymavlink's mavgen
# after editing the lists in dreamlink/firmware_bridge/dialect/generate.py; commit the three files it writes.
dialect: venv
	$(PY) -m dreamlink.firmware_bridge.dialect.generate

# int8 checked in the closed loop: a 5 x 2 x 256 PX4 quad world model built by the demo's recipe, calibrated
# (fp32 vs int8 static; speed-up at K=512 x H=15, one thread), then 10 paired lockstep seeds per precision
# at the demo's K=128 x H=45 and a closed-loop gate. Not a test: about 40 min on 2 cores. Report in
# runs/calibrate-quad/calibration/calibration.md; CAL_ARGS=--reuse keeps the data and bundle already built.
calibrate-quad: venv
	$(PY) -m dreamlink.calibration.quad_study --out runs/calibrate-quad $(CAL_ARGS)

# dreamlink against the real ArduPilot / PX4 firmware in SITL (not built or shipped here): set DREAMLINK_ARDUPILOT_SITL
# and/or DREAMLINK_PX4_SITL to a command that starts an installed SITL sending MAVLink to udp 127.0.0.1:{port}
# (`python -m dreamlink.real_sitl --help`). Learns each vehicle from the sim-pretrained bundles of `make demo-quad`,
# then flies 5 planner seeds each of sim-only, fine-tuned and the autopilot's own position control; table in
# runs/real-sitl/real-sitl.md. REAL_SITL_ARGS=--mavproxy puts MAVProxy between. Says so and exits 0 when none is set.
REAL_SITL_ARGS ?=
real-sitl: venv
	$(PY) -m dreamlink.real_sitl --sim runs/demo-quad --out runs/real-sitl $(REAL_SITL_ARGS)

# How a sim-pretrained quad model is best adapted to a real autopilot's data (full fine-tune, real-only, sim+real
# mix), judged by held-out k-step error on the real SITL logs in ../shared/data/sitl-logs. Needs `make demo-quad`.
finetune-study: venv
	$(PY) bench/finetune_study.py --sim runs/demo-quad --minutes 1 --out runs/finetune-study

# Bring your own robot (examples/pendulum, examples/mountain_car): each vehicle file built and flown with the CLI
# alone (collect, train, export, `sitl gym` + `run` in real time over UDP), 10 seeds each, beside pytorch-mppi's own
# pendulum swing-up examples (true and learned dynamics, same machine, same run); table in runs/byo-study/results.md.
# About 12 min on 2 cores; BYO_ARGS=--quick for a smoke run, --skip-build to reuse the bundles.
BYO_ARGS ?=
byo-study: $(VENV)/.bench-installed
	$(PY) bench/byo_robot_study.py --out runs/byo-study $(BYO_ARGS)
