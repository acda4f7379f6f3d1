# The two set-up commands of README.md: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# CPU installs pin torch to the local CPU wheel; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench bench-worker-io bench-slicer bench-gradual bench-self-labelling bench-self-labelling-jobs bench-threads bench-interactive bench-saved-model bench-boxes clean bench-mean-teacher bench-mean-teacher-2d bench-collaborative bench-distributed bench-collaborative-hippocampus

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

demo: venv
	$(VENV)/bin/sparseseg demo --out demo-output

# The suite in TEST_WORKERS processes (pytest-xdist), one thread each: most tests are single-process CPU work
# or wait on a worker process, so two processes use both cores of a 2-core machine; TEST_WORKERS=0 runs serially.
# --dist loadfile runs each test file in one process: several files build a costly module-scoped fixture (real
# worker jobs, a trained network) that two processes sharing a file would each build (--dist loadgroup would
# pick files one by one but does nothing under pytest 9, whose node ids xdist 3.8 cannot tag with a group).
TEST_WORKERS ?= 2
test: venv
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: venv
	$(VENV)/bin/sparseseg bench --dataset ../shared/data/hippocampus --annotation central-slice \
		--methods sparse-only,full --networks 2d,3d --budget paper --out bench-output/hippocampus

# Issue 6: the self-labelling table of README.md next to the paper's Table 2: baselines, faithful/random (at the
# default's epoch length, epoch_scale=3, since the fifth session), the
# improved default (two co-labelled runs, epochs 3x the budget's) and the previous default (v6: the options in
# docs/results/self-labelling.md), as two parallel
# single-threaded queues (2 cores), merged into one report.
SL_BENCH = OMP_NUM_THREADS=1 $(VENV)/bin/sparseseg bench --dataset ../shared/data/hippocampus \
	--annotation central-slice --budget paper
SL_OUT = bench-output/self_labelling_parts
bench-self-labelling: venv
	mkdir -p $(SL_OUT)
	( $(SL_BENCH) --methods sparse-only,full --networks 2d --out $(SL_OUT)/baselines2d && \
	  $(SL_BENCH) --methods self-labelling-faithful,self-labelling-random --option epoch_scale=3 --out $(SL_OUT)/faithful && \
	  $(SL_BENCH) --methods full --networks 3d --out $(SL_OUT)/full3d && \
	  $(SL_BENCH) --methods self-labelling --option epoch_scale=1 --option student_3d=true --out $(SL_OUT)/v6 ) & first=$$!; \
	( $(SL_BENCH) --methods self-labelling --out $(SL_OUT)/default ) & second=$$!; \
	wait $$first && wait $$second
	$(VPY) -m SparseSegLib.round_curves $(SL_OUT)/*/results.json --out bench-output/self_labelling_final

# Issue 6: self-labelling as the Slicer user runs it (one volume, one slice, a worker job): 10 hippocampus test
# volumes, the default (theta 0.7 for one run) against theta 0.6, every streamed round scored (~35 min
# single-threaded with the budget's epochs at the sixth stop; a job takes about twice as long since epoch_scale 3)
bench-self-labelling-jobs: venv
	OMP_NUM_THREADS=1 $(VPY) -m SparseSegLib.benchmarks.self_labelling_jobs --volumes 10 --out bench-output/sl_jobs

# Issue 19: the Slicer user played on 10 left-atrium + 10 hippocampus report scans and the mni152 tissue map: the
# central slice painted, Start with the module's defaults, 4 corrections (suggested slices) with Continue, next to
# Fill between slices and copy-the-slice; two scans at a time, one thread each. Long: --resume goes on after a stop.
# Pick settings on the dev scans first: add --split dev (and --method / --option / --parameter for a candidate).
# Issue 19: the module's user on 10 left-atrium + 10 hippocampus report scans + mni152 (hours on 2 CPU cores;
# docs/results/interactive.md ran the data sets as separate side-by-side processes), then Start's speed on 240x240x155
bench-interactive: venv
	OMP_NUM_THREADS=1 $(VPY) -m SparseSegLib.benchmarks.interactive --mni152 --jobs 2 --threads 1 \
		--out bench-output/interactive --resume
	$(VPY) -m SparseSegLib.benchmarks.start_speed --threads 2

# Save model after a one-scan Start, applied to the other dev scans of its data set (docs/results/saved-model.md)
bench-saved-model: venv
	for data in hippocampus left_atrium; do OMP_NUM_THREADS=1 $(VPY) -m SparseSegLib.benchmarks.interactive \
		--dataset ../shared/data/$$data --cases 5 --split dev --slices 1 --threads 1 \
		--out bench-output/saved-model/start-$$data --resume; done
	OMP_NUM_THREADS=1 $(VPY) -m SparseSegLib.benchmarks.saved_model bench-output/saved-model/start-hippocampus \
		bench-output/saved-model/start-left_atrium --out bench-output/saved-model/report

# Start from ROI boxes (README, "From ROI boxes"): 3 boxes and 1 box of a third of the object's extent on the same
# 10 report scans per data set, then 2 suggested slices painted with Continue (about 3 h for the left atrium)
bench-boxes: venv
	for data in left_atrium hippocampus; do for boxes in 3 1; do \
	  OMP_NUM_THREADS=1 $(VPY) -m SparseSegLib.benchmarks.box_start --dataset ../shared/data/$$data --split report \
	    --cases 10 --boxes $$boxes --corrections 2 --threads 1 --out bench-output/boxes/$$data-$$boxes || exit 1; \
	done; done

bench-worker-io: venv
	$(VPY) -m SparseSegLib.benchmarks.worker_io

# main-thread cost of the Slicer session on 256^3: one poll (< 20 ms) and one round import (< 300 ms)
bench-slicer: venv
	$(VPY) -m SparseSegLib.session.benchmark

# 3D Gradual Learning, paper protocol on the left atrium + interactive use (~1 h single-threaded on a shared CPU)
bench-gradual: venv
	$(VPY) -m SparseSegLib.benchmarks.gradual --out bench-output/gradual --train 2 --iterations-per-round 200 \
		--interactive-rounds 4 --interactive-iterations 100

bench-threads: venv
	$(VPY) -m SparseSegLib.benchmarks.threads

clean:
	rm -rf $(VENV) demo-output bench-output

# Issue 17: Mean Teacher / UA-MT on the left atrium at a CPU scale (docs/results/mean-teacher.md): the 80 cases
# resampled to 2x spacing (1.25 mm), one seeded split 64 train / 16 test, 3D U-Net 16-32-64-128, patches
# 48x64x64, 300 iterations, UA-MT with T=4 teacher passes (not 8), one thread, one run at a time; each run's folder
# keeps its command in command.txt.
MT_OUT = bench-output/mean_teacher
MT_RUN_OUT = $(MT_OUT)
MT_BENCH = $(VENV)/bin/sparseseg bench --dataset $(MT_OUT)/data --networks 3d --split 0.8,0,0.2 --seed 0 \
	--device cpu --iterations 300 --option channels=16,32,64,128
MT_RUNS = semi-labelled-only:full:mean-teacher:--labelled=13,--option=consistency=0 semi-mt:full:mean-teacher:--labelled=13 \
	semi-uamt:full:ua-mt:--labelled=13,--option=passes=4 full:full:mean-teacher:--option=consistency=0 \
	sparse-mt:central-slice:mean-teacher: sparse-uamt:central-slice:ua-mt:--option=passes=4 \
	semi-mt-noprep:full:mean-teacher:--labelled=13,--option=preprocessing=false \
	sparse-only:central-slice:mean-teacher:--option=consistency=0
bench-mean-teacher: venv
	test -f $(MT_OUT)/data/dataset.json || $(VPY) -m SparseSegLib.benchmarks.mean_teacher prepare --out $(MT_OUT)/data
	for spec in $(MT_RUNS); do \
	  name=$$(echo $$spec | cut -d: -f1); annotation=$$(echo $$spec | cut -d: -f2); method=$$(echo $$spec | cut -d: -f3); \
	  extra=$$(echo $$spec | cut -d: -f4- | tr ',' ' ' | sed 's/--labelled=/--labelled /; s/--option=/--option /g'); \
	  test -f $(MT_RUN_OUT)/$$name/results.json && continue; mkdir -p $(MT_RUN_OUT)/$$name; \
	  command="OMP_NUM_THREADS=1 $(MT_BENCH) --annotation $$annotation --methods $$method $$extra --out $(MT_RUN_OUT)/$$name"; \
	  echo "$$command" > $(MT_RUN_OUT)/$$name/command.txt; eval "$$command" || exit 1; \
	done
	$(VPY) -m SparseSegLib.benchmarks.mean_teacher report $(addprefix $(MT_RUN_OUT)/,$(foreach s,$(MT_RUNS),$(firstword $(subst :, ,$(s)))))

# Issue 17, the 2D form (dims=2: a 2D U-Net on slices across k, the collaborative paper's MT baselines): the same
# data and split, the reference's 6000 iterations (--budget paper), batch 2 + 2 slices, UA-MT with T = 8, defaults
# otherwise; about 6 min per run (UA-MT about 15) on one core.
MT2D_OUT = bench-output/mean_teacher_2d
MT2D_BENCH = $(VENV)/bin/sparseseg bench --dataset $(MT_OUT)/data --split 0.8,0,0.2 --seed 0 --device cpu \
	--budget paper --option dims=2
MT2D_RUNS = semi-only:full:mean-teacher:--labelled=13,--option=consistency=0 semi-mt:full:mean-teacher:--labelled=13 \
	semi-uamt:full:ua-mt:--labelled=13 full:full:mean-teacher:--option=consistency=0 \
	sparse-only:central-slice:mean-teacher:--option=consistency=0 sparse-mt:central-slice:mean-teacher: \
	sparse-uamt:central-slice:ua-mt:
bench-mean-teacher-2d: venv
	$(MAKE) bench-mean-teacher MT_RUN_OUT=$(MT2D_OUT) MT_BENCH="$(MT2D_BENCH)" MT_RUNS="$(MT2D_RUNS)"

# Issue 16: collaborative learning on the left atrium at a CPU scale (docs/results/collaborative.md): the 80 cases
# resampled to 1.25 mm (the mean-teacher benchmark's `prepare`), one seeded split 64 train / 16 test, one central
# slice per training volume, 2D networks, 400 iterations per segmentation network, one thread, one run at a time;
# each run's folder keeps its command in command.txt.
CL_OUT = bench-output/collaborative
CL_BENCH = $(VENV)/bin/sparseseg bench --dataset $(CL_OUT)/data --networks 2d --split 0.8,0,0.2 --seed 0 \
	--device cpu --iterations 400 --annotation central-slice
# The paper's settings are `collaborative-faithful` (these runs were made as `collaborative` before it became the
# validation-chosen default; the run propagate is the thirteenth session's default, default-14 the fourteenth's,
# default the fifteenth's: CL_14 gives back the fourteenth's options). The runs that propagate with the single-scan
# default share one cache of its results (CL_CACHE).
CL_CACHE_DIR = $(CL_OUT)/propagate-cache
CL_CACHE = --option=propagate_cache=$(CL_CACHE_DIR)
# CL_15 gives back the fifteenth session's default (argmax predictions); CL_14 the fourteenth's.
CL_15 = --option=prediction_threshold=0
CL_14 = --option=propagate_targets=argmax,--option=final_axes=0,$(CL_15)
CL_RUNS = baselines:sparse-only,full: faithful:collaborative-faithful: semi:collaborative-faithful:--option=branches=semi \
	registration:collaborative-faithful:--option=branches=registration \
	intersection:collaborative-faithful:--option=fusion=intersection \
	improved:collaborative-faithful:--option=fusion=intersection,--option=open_end=1 \
	improved-demons:collaborative-faithful:--option=fusion=intersection,--option=open_end=1,--option=registration=demons \
	demons-intersection:collaborative-faithful:--option=fusion=intersection,--option=registration=demons \
	propagate:collaborative:--option=postprocess=none,$(CL_14),$(CL_CACHE) default-14:collaborative:$(CL_14),$(CL_CACHE) \
	default-15:collaborative:$(CL_15),$(CL_CACHE) default:collaborative:$(CL_CACHE)
# The default and full supervision at the default budget (paper: 1500 iterations) instead of 400.
CL_PAPER = OMP_NUM_THREADS=1 nice -n 5 $(VENV)/bin/sparseseg bench --dataset $(CL_OUT)/data --networks 2d --split 0.8,0,0.2 \
	--seed 0 --device cpu --budget paper --annotation central-slice
CL_PAPER_RUNS = default-paper-budget:collaborative:--option=propagate_cache=$(CL_CACHE_DIR) full-paper-budget:full: \
	default-15-paper-budget:collaborative:--option=propagate_cache=$(CL_CACHE_DIR),$(CL_15)
# Choosing the fourteenth and fifteenth sessions' options: 48 of the 64 training volumes train, the other 16 score
# (--evaluate val); the test volumes are the same 16 as above. The fifteenth's: val-lcc (its starting point),
# val-labels, val-axes and val-default (both).
CL_VAL_BENCH = $(VENV)/bin/sparseseg bench --dataset $(CL_OUT)/data --networks 2d --split 0.6,0.2,0.2 --seed 0 \
	--evaluate val --device cpu --iterations 400 --annotation central-slice --methods collaborative --option propagate_cache=$(CL_CACHE_DIR)
CL_VAL_RUNS = val-before:--option=postprocess=none,$(CL_14) val-lcc:$(CL_14) \
	val-object:--option=object_threshold=0.8,--option=postprocess=none,$(CL_14) val-object-lcc:--option=object_threshold=0.8,$(CL_14) \
	val-labels:--option=final_axes=0,$(CL_15) val-axes:--option=propagate_targets=argmax,$(CL_15) val-default-15:$(CL_15) \
	val-default:
# The sixteenth's prediction_threshold sweeps: one training each, scored at fixed thresholds and at `auto` (the
# default), on the val volumes (the choice) at 400 iterations and at the default budget.
CL_SWEEP = OMP_NUM_THREADS=1 nice -n 5 $(VPY) -m SparseSegLib.benchmarks.collaborative_threshold --dataset $(CL_OUT)/data \
	--split 0.6,0.2,0.2 --evaluate val --option propagate_cache=$(CL_CACHE_DIR) --thresholds 0.5,0.6,0.7,0.8,0.9,auto
# Our self-labelling default on the same split, with its own schedule (budget paper, early stopping on 15% of the
# training volumes it holds out itself), as in its hippocampus table.
CL_SELF_LABELLING = OMP_NUM_THREADS=1 nice -n 5 $(VENV)/bin/sparseseg bench --dataset $(CL_OUT)/data --networks 2d \
	--split 0.8,0,0.2 --seed 0 --device cpu --budget paper --annotation central-slice --methods self-labelling \
	--out $(CL_OUT)/self-labelling
bench-collaborative: venv
	test -f $(CL_OUT)/data/dataset.json || $(VPY) -m SparseSegLib.benchmarks.mean_teacher prepare --out $(CL_OUT)/data
	for spec in $(CL_RUNS); do \
	  name=$$(echo $$spec | cut -d: -f1); methods=$$(echo $$spec | cut -d: -f2); \
	  extra=$$(echo $$spec | cut -d: -f3- | tr ',' ' ' | sed 's/--option=/--option /g'); \
	  test -f $(CL_OUT)/$$name/results.json && continue; mkdir -p $(CL_OUT)/$$name; \
	  command="OMP_NUM_THREADS=1 nice -n 5 $(CL_BENCH) --methods $$methods $$extra --out $(CL_OUT)/$$name"; \
	  echo "$$command" > $(CL_OUT)/$$name/command.txt; eval "$$command" || exit 1; \
	done
	for spec in $(CL_PAPER_RUNS); do \
	  name=$$(echo $$spec | cut -d: -f1); methods=$$(echo $$spec | cut -d: -f2); extra=$$(echo $$spec | cut -d: -f3- | sed 's/--option=/--option /g'); \
	  test -f $(CL_OUT)/$$name/results.json && continue; mkdir -p $(CL_OUT)/$$name; \
	  command="$(CL_PAPER) --methods $$methods $$extra --out $(CL_OUT)/$$name"; \
	  echo "$$command" > $(CL_OUT)/$$name/command.txt; eval "$$command" || exit 1; \
	done
	for spec in $(CL_VAL_RUNS); do \
	  name=$$(echo $$spec | cut -d: -f1); extra=$$(echo $$spec | cut -d: -f2- | tr ',' ' ' | sed 's/--option=/--option /g'); \
	  test -f $(CL_OUT)/$$name/results.json && continue; mkdir -p $(CL_OUT)/$$name; \
	  command="OMP_NUM_THREADS=1 nice -n 5 $(CL_VAL_BENCH) $$extra --out $(CL_OUT)/$$name"; \
	  echo "$$command" > $(CL_OUT)/$$name/command.txt; eval "$$command" || exit 1; \
	done
	test -f $(CL_OUT)/self-labelling/results.json || { mkdir -p $(CL_OUT)/self-labelling; \
	  command="$(CL_SELF_LABELLING)"; echo "$$command" > $(CL_OUT)/self-labelling/command.txt; eval "$$command" || exit 1; }
	$(CL_SWEEP) --iterations 400 --out $(CL_OUT)/threshold-val-400
	$(CL_SWEEP) --budget paper --out $(CL_OUT)/threshold-val-paper
	OMP_NUM_THREADS=1 nice -n 5 $(VPY) -m SparseSegLib.benchmarks.collaborative registration --data $(CL_OUT)/data \
	  --volumes 12 --out $(CL_OUT)/registration-by-distance
	$(VPY) -m SparseSegLib.benchmarks.collaborative report --hd95 --no-paper $(addprefix $(CL_OUT)/,$(foreach s,$(CL_VAL_RUNS),$(firstword $(subst :, ,$(s)))))
	$(VPY) -m SparseSegLib.benchmarks.collaborative report $(addprefix $(CL_OUT)/,$(foreach s,$(CL_RUNS) $(CL_PAPER_RUNS),$(firstword $(subst :, ,$(s))))) \
	  $(CL_OUT)/self-labelling

# Issue 16 on the self-labelling split (MSD Task04 hippocampus, 140 train / 30 val / 30 test, seed 0, budget paper):
# first five option sets scored on the 30 val volumes (--evaluate val) to choose the default, then the test table.
CLH_OUT = bench-output/collaborative_hc
CLH_BENCH = $(VENV)/bin/sparseseg bench --dataset ../shared/data/hippocampus --annotation central-slice --budget paper \
	--networks 2d --split 0.7,0.15,0.15 --seed 0 --device cpu
# The runs that propagate with the single-scan default share one cache of its results (140 training volumes).
CLH_CACHE = --option=propagate_cache=$(CLH_OUT)/propagate-cache
# CLH_22 gives back the twenty-second session's default (every final network splits the classes), CLH_16 the
# sixteenth to twenty-first sessions' (the pseudo-labels' classes), CLH_15 the fifteenth's.
CLH_22 = --option=class_axes=all
CLH_16 = --option=pseudo_classes=propagated
CLH_15 = --option=prediction_threshold=0,$(CLH_16)
CLH_14 = --option=propagate_targets=argmax,--option=final_axes=0,$(CLH_15)
CLH_RUNS = val-faithful:collaborative-faithful:--evaluate=val val-demons:collaborative-faithful:--evaluate=val,--option=registration=demons \
	val-intersection:collaborative-faithful:--evaluate=val,--option=fusion=intersection \
	val-improved:collaborative-faithful:--evaluate=val,--option=fusion=intersection,--option=open_end=1 \
	val-demons-intersection:collaborative-faithful:--evaluate=val,--option=fusion=intersection,--option=registration=demons \
	val-improved-demons:collaborative-faithful:--evaluate=val,--option=fusion=intersection,--option=open_end=1,--option=registration=demons \
	baselines:sparse-only,full: semi:collaborative-faithful:--option=branches=semi \
	registration:collaborative-faithful:--option=branches=registration faithful:collaborative-faithful: \
	demons-intersection:collaborative-faithful:--option=fusion=intersection,--option=registration=demons \
	val-propagate:collaborative:--evaluate=val,--option=postprocess=none,$(CLH_14),$(CLH_CACHE) \
	propagate:collaborative:--option=postprocess=none,$(CLH_14),$(CLH_CACHE) \
	val-object:collaborative:--evaluate=val,--option=object_threshold=0.8,--option=postprocess=none,$(CLH_14),$(CLH_CACHE) \
	val-object-lcc:collaborative:--evaluate=val,--option=object_threshold=0.8,$(CLH_14),$(CLH_CACHE) \
	val-default-14:collaborative:--evaluate=val,$(CLH_14),$(CLH_CACHE) default-14:collaborative:$(CLH_14),$(CLH_CACHE) \
	val-labels:collaborative:--evaluate=val,--option=final_axes=0,$(CLH_15),$(CLH_CACHE) \
	val-axes:collaborative:--evaluate=val,--option=propagate_targets=argmax,$(CLH_15),$(CLH_CACHE) \
	val-default-15:collaborative:--evaluate=val,$(CLH_15),$(CLH_CACHE) default-15:collaborative:$(CLH_15),$(CLH_CACHE) \
	val-default-16:collaborative:--evaluate=val,$(CLH_16),$(CLH_CACHE) default-16:collaborative:$(CLH_16),$(CLH_CACHE) \
	val-default-22:collaborative:--evaluate=val,$(CLH_22),$(CLH_CACHE) default-22:collaborative:$(CLH_22),$(CLH_CACHE) \
	val-default:collaborative:--evaluate=val,$(CLH_CACHE) default:collaborative:$(CLH_CACHE)
bench-collaborative-hippocampus: venv
	for spec in $(CLH_RUNS); do \
	  name=$$(echo $$spec | cut -d: -f1); methods=$$(echo $$spec | cut -d: -f2); \
	  extra=$$(echo $$spec | cut -d: -f3- | tr ',' ' ' | sed -e 's/--option=/--option /g' -e 's/--evaluate=/--evaluate /g'); \
	  test -f $(CLH_OUT)/$$name/results.json && continue; mkdir -p $(CLH_OUT)/$$name; \
	  command="OMP_NUM_THREADS=1 nice -n 5 $(CLH_BENCH) --methods $$methods $$extra --out $(CLH_OUT)/$$name"; \
	  echo "$$command" > $(CLH_OUT)/$$name/command.txt; eval "$$command" || exit 1; \
	done
	OMP_NUM_THREADS=1 nice -n 5 $(VPY) -m SparseSegLib.benchmarks.collaborative_threshold --dataset ../shared/data/hippocampus \
	  --split 0.7,0.15,0.15 --evaluate val --budget paper --option propagate_cache=$(CLH_OUT)/propagate-cache \
	  --thresholds 0.5,0.6,0.7,0.8,0.9,auto --out $(CLH_OUT)/threshold-val
	test -f $(CLH_OUT)/registration-by-distance/registration_by_distance.json || OMP_NUM_THREADS=1 nice -n 5 \
	  $(VPY) -m SparseSegLib.benchmarks.collaborative registration --data ../shared/data/hippocampus --split 0.7,0.15,0.15 \
	  --volumes 12 --out $(CLH_OUT)/registration-by-distance
	$(VPY) -m SparseSegLib.benchmarks.collaborative report --hd95 --no-paper $(addprefix $(CLH_OUT)/,$(filter val-%,$(foreach s,$(CLH_RUNS),$(firstword $(subst :, ,$(s))))))
	$(VPY) -m SparseSegLib.benchmarks.collaborative report --hd95 --no-paper $(addprefix $(CLH_OUT)/,$(filter-out val-%,$(foreach s,$(CLH_RUNS),$(firstword $(subst :, ,$(s))))))

# Issue 18: data-parallel training throughput, 1 process against 2 (torchrun --nproc 2, gloo) on this CPU, `full`
# on the bundled hippocampus sample, 2D and 3D, with the scaling efficiency (docs/distributed.md)
bench-distributed: venv
	$(VPY) -m SparseSegLib.benchmarks.distributed --networks 2d,3d --iterations 40 --nproc 2
