#!/usr/bin/env bash
# The CK+48 fine-tuning campaign (configs/finetune/ckplus48.yaml) on the lent GPU machine, Keras JAX
# backend, no TensorFlow or mediapipe there: the runs that reports/ckplus48/runs/ lacks, shared by
# PROCS processes side by side on the one GPU (pipelines/finetune.py --shard i/PROCS).
#
# Here, first:   python pipelines/device/pack.py --task finetune   (CK+48 + KDEF face caches, wheels, code)
# Then, with the device tool, from the repository root:
#                run  command="bash .device/start.sh"  carry=[".device"]
# Then here:     cp -r <files_at>/runs/. reports/ckplus48/runs/ (new runs, and runs retrained because
#                their protocol changed, e.g. a new backbone), commit, and `make evaluate DATASET=ckplus48`.
# Locally, as a smoke test:
#   SMOKE=1 PY=.venv/bin/python OUT=/tmp/out PYTHONPATH=/tmp/notf bash .device/start.sh
#
# Every process starts no new run after TIME_LIMIT minutes; at DEADLINE seconds after the start the
# ones still going are interrupted (their finished runs are kept). Writes to $OUT: runs/ (one JSON
# per new run, the layout of reports/ckplus48/runs), report/ (the report of all runs), log.txt.
set -uo pipefail
PACK=${PACK:-$PWD/.device}
REPO_ROOT=$PWD                # the working tree that travelled: committed run files, the backbone
cd "$(dirname "$0")/../.."    # the code: src/ of .device/code.tar.xz, the packed commit (start.sh)
OUT=${OUT:?set OUT to the folder for the results}
SMOKE=${SMOKE:-0}
WORK=${WORK:-/tmp/fer_device_finetune}
PROCS=${PROCS:-12}
TIME_LIMIT=${TIME_LIMIT:-7}
DEADLINE=${DEADLINE:-540}
mkdir -p "$WORK" "$OUT"
started=$(date +%s)

source pipelines/device/common.sh
if [ "$SMOKE" = 1 ]; then  # two tiny runs on this machine's CPU, with the packages already here
    PROCS=2; EXTRA=(--epochs 1 --set train.steps_per_epoch=2 --variants softmax --folds 0,1 --seeds 0 --parts main)
else
    EXTRA=()
fi
device_setup || exit 1
export FER_TF_DATASETS="$PACK/datasets"  # face caches, read as datasets (fer_tf.preprocess.prepared)
export FER_TF_CACHE="$WORK/cache"

# the runs already committed are skipped: start from a copy of them
rm -rf "$WORK/runs" && mkdir -p "$WORK/runs"
[ -d "$REPO_ROOT/reports/ckplus48/runs" ] && cp -r "$REPO_ROOT/reports/ckplus48/runs/." "$WORK/runs/"
touch "$WORK/copied"  # run files written after this are new, or retrained because their protocol changed
COMMON=(--dataset ckplus48 --runs "$WORK/runs" --report "$WORK/report" --time-limit "$TIME_LIMIT"
        --pretrained "$REPO_ROOT/pretrained/fer2013_backbone.keras" "${EXTRA[@]}")
declare -a PIDS=()
for i in $(seq 0 $((PROCS - 1))); do
    ( $PY pipelines/finetune.py "${COMMON[@]}" --shard "$i/$PROCS" --work "$WORK/work$i" 2>&1 \
        | grep --line-buffered -v "NodeDef\|^ *$\|/step - " | sed -u "s/^/[$i] /" > "$WORK/shard$i.log" ) &
    PIDS+=($!)
done
progress() {  # how many run files there are, and the newest results
    echo "$(find "$WORK/runs" -name '*.json' | wc -l) run files"
    grep -h "sequence accuracy" "$WORK"/shard*.log | tail -n 3
}
wait_for 20 "pipelines/finetune.py" progress "${PIDS[@]}"
cat "$WORK"/shard*.log > "$OUT/log.txt"
# the run files written here only (new, or replacing stale ones), in the layout of reports/ckplus48/runs
find "$WORK/runs" -name '*.json' -newer "$WORK/copied" | while read -r f; do
    rel=${f#"$WORK/runs/"}; mkdir -p "$OUT/runs/$(dirname "$rel")"; cp "$f" "$OUT/runs/$rel"
done
$PY pipelines/finetune.py --dataset ckplus48 --runs "$WORK/runs" --report "$OUT/report" --report-only \
    --pretrained "$REPO_ROOT/pretrained/fer2013_backbone.keras" >> "$OUT/log.txt" 2>&1
echo "$(find "$OUT/runs" -name '*.json' 2>/dev/null | wc -l) run files written (new, or retrained); total $(( $(date +%s) - started )) s"
