#!/usr/bin/env bash
# FER2013 pretraining on the lent GPU machine (Keras JAX backend; no TensorFlow, no mediapipe there).
#
# Here, first:   python pipelines/device/pack.py   (writes .device/: images, the code of HEAD and Keras)
# Then, with the device tool, from the repository root:
#                run  command="bash .device/start.sh"  carry=[".device"]
# Locally, as a smoke test:  SMOKE=1 PY=.venv/bin/python OUT=/tmp/out bash .device/start.sh
#
# Runs side by side on the one GPU, each its own process:
# - paper_full: the paper's full schedule (configs/pretrain-paper.yaml: SGD 0.01, halve-and-reload,
#   up to 300 epochs, until the learning rate reaches 1e-5), crop + flip;
# - the rows of configs/pretrain-ablation.yaml (pipelines/ablate_pretrain.py), at its equal budget;
# - recipe: configs/pretrain.yaml for all its epochs (the CPU run's twin).
# A probe first times the compile and 20 steps (printed at once, so a cut-short call still says
# how fast the machine trains). Every run stops training after TIME_LIMIT minutes; at DEADLINE
# seconds after the start any run still going is interrupted, and whatever finished is collected.
# MODE=accuracy3 instead runs, side by side and on their full schedule, the runs of
# pipelines/accuracy3.py that can start now (not committed yet; the networks they need committed),
# as the working tree that travelled says: the code snapshot holds no results or teachers.
# Writes to $OUT: results.json (every finished run: results and history), log.txt, the models.
set -uo pipefail
PACK=${PACK:-$PWD/.device}  # images, code, SOURCE_COMMIT (run from the repository root)
REPO_ROOT=$PWD                # the working tree that travelled: committed results and teachers
cd "$(dirname "$0")/../.."    # the code: src/ of .device/code.tar.xz, the packed commit (start.sh)
OUT=${OUT:?set OUT to the folder for the results}
SMOKE=${SMOKE:-0}
MODE=${MODE:-paper}  # paper: the paper's schedule, the ablation, the recipe; accuracy3: issue 27's runs
WORK=${WORK:-/tmp/fer_device}
TIME_LIMIT=${TIME_LIMIT:-6}
DEADLINE=${DEADLINE:-540}
mkdir -p "$WORK" "$OUT"
started=$(date +%s)

source pipelines/device/common.sh
if [ "$SMOKE" = 1 ]; then  # a few steps on this machine's CPU, with the packages already here
    TIME_LIMIT=0.2; EXTRA=(--budget-epochs 1 --max-train-images 256); PROBE_STEPS=2
else
    EXTRA=(); PROBE_STEPS=20
fi
device_setup || exit 1
export FER_TF_MAKE_COMMAND="bash pipelines/device/run.sh (KERAS_BACKEND=jax, GPU)" FER_TF_CACHE="$WORK/cache"

$PY pipelines/device/unpack.py "$PACK/fer2013-jpeg.npz" "$WORK/fer2013" || exit 1
$PY pipelines/device/probe.py "$WORK/fer2013" "$PROBE_STEPS" || exit 1  # also builds the face cache
echo "setup and probe took $(( $(date +%s) - started )) s"

ROWS=$($PY -c "import sys; sys.path.insert(0, 'pipelines'); from ablate_pretrain import ablation_rows; print(' '.join(r['name'] for r in ablation_rows()[1]))")
[ "$SMOKE" = 1 ] && ROWS="paper"
COMMON=(--data "$WORK/fer2013" --set train.time_limit_minutes=$TIME_LIMIT --set train.checkpoint_every=1000)
declare -A PIDS=()
launch() {  # name, command...: run in the background, its lines prefixed with its name
    local name=$1; shift
    ( "$@" 2>&1 | sed -u "s/^/[$name] /" | grep --line-buffered -v "^\[$name\] *$" > "$WORK/$name.log" ) &
    PIDS[$name]=$!
}
if [ "$MODE" = accuracy3 ]; then  # issue 27: the campaign's runs that can start now, full schedule
    ROWS=""
    [ "$SMOKE" = 1 ] && A3=(--set train.epochs=1 --set train.warmup_epochs=0 --max-train-images 256) || A3=()
    while read -r name sets; do
        args=(); for s in $sets; do args+=(--set "$s"); done
        launch "$name" $PY pipelines/pretrain.py "${COMMON[@]}" \
            "${args[@]}" "${A3[@]}" --output "$WORK/runs/$name" --report "$WORK/reports/$name" \
            --publish "$WORK/pub/$name" --no-resume
    done < <($PY pipelines/accuracy3.py --runnable --repo "$REPO_ROOT")
fi
if [ "$SMOKE" != 1 ] && [ "$MODE" != accuracy3 ]; then
    launch paper_full $PY pipelines/pretrain.py --config configs/pretrain-paper.yaml "${COMMON[@]}" \
        --output "$WORK/runs/paper_full" --report "$WORK/reports/paper_full" --publish "$WORK/pub/paper_full" --no-resume
    launch recipe $PY pipelines/pretrain.py "${COMMON[@]}" \
        --output "$WORK/runs/recipe" --report "$WORK/reports/recipe" --publish "$WORK/pub/recipe" --no-resume
fi
for row in $ROWS; do
    launch "$row" $PY pipelines/ablate_pretrain.py --rows "$row" --data "$WORK/fer2013" --time-limit "$TIME_LIMIT" \
        --results "$WORK/ablation" --work "$WORK/runs/ablation" "${EXTRA[@]}"
done
progress() {  # the newest epoch line of every run
    local name
    for name in "${!PIDS[@]}"; do grep -h "epoch_seconds" "$WORK/$name.log" | tail -n 1 | cut -c1-220; done
}
wait_for 30 "pipelines/(pretrain|ablate_pretrain).py" progress "${PIDS[@]}"
cat "$WORK"/*.log > "$OUT/log.txt"
$PY pipelines/device/collect.py "$WORK" "$OUT"
echo "total $(( $(date +%s) - started )) s"
