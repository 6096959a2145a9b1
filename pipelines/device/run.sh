#!/usr/bin/env bash
# FER2013 pretraining on the lent GPU machine (Keras JAX backend; no TensorFlow, no mediapipe there).
#
# Here, first:   python pipelines/device/pack.py   (writes .device/: images, wheels, code of HEAD)
# Then, with the device tool, from the repository root:
#                run  command="bash .device/src/pipelines/device/run.sh"  carry=[".device"]
# Locally, as a smoke test:  SMOKE=1 PY=.venv/bin/python OUT=/tmp/out bash .device/src/pipelines/device/run.sh
#
# Runs, side by side on the one GPU (each its own process):
# - "paper_full": the paper's full schedule (configs/pretrain-paper.yaml: SGD 0.01, halve-and-reload,
#   up to 300 epochs, until the learning rate reaches 1e-5), crop + flip;
# - the ablation rows of reports/fer2013 at an equal budget of ABLATION_EPOCHS epochs, float32:
#   the paper's optimiser and schedule; + warm-up/cosine with Nesterov SGD 0.05 and weight decay
#   5e-4; + rotation/zoom/shift; + random erasing; + label smoothing (= configs/pretrain.yaml in
#   float32); and the same in mixed bfloat16 (= configs/pretrain.yaml);
# - "recipe_fp32_75": configs/pretrain.yaml for its full 75 epochs in float32 (the CPU run's twin).
# Every run stops after TIME_LIMIT minutes of training at the latest and is then evaluated.
# Writes to $OUT: results.json (every run's results and history), log.txt, and four models.
set -uo pipefail
PACK=${PACK:-$PWD/.device}  # images, wheels, SOURCE_COMMIT (run from the repository root)
cd "$(dirname "$0")/../.."    # the code: .device/src, a snapshot of the packed commit
OUT=${OUT:?set OUT to the folder for the results}
SMOKE=${SMOKE:-0}
WORK=${WORK:-/tmp/fer_device}
TIME_LIMIT=${TIME_LIMIT:-6}
ABLATION_EPOCHS=${ABLATION_EPOCHS:-40}
mkdir -p "$WORK" "$OUT"
started=$(date +%s)

if [ "$SMOKE" = 1 ]; then  # a few steps on this machine's CPU, with the packages already here
    PY=${PY:-python}; TIME_LIMIT=0.2; ABLATION_EPOCHS=1; EXTRA=(--max-train-images 256)
else
    PY=python3; EXTRA=()
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$PACK"/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export GIT_DIR=/nonexistent-fer-tf  # the packed commit names the code, not any repository around it
export XLA_PYTHON_CLIENT_PREALLOCATE=false FER_TF_SOURCE_COMMIT="$(cat "$PACK/SOURCE_COMMIT")"
export FER_TF_MAKE_COMMAND="bash pipelines/device/run.sh (KERAS_BACKEND=jax, GPU)"

$PY pipelines/device/unpack.py "$PACK/fer2013-jpeg.npz" "$WORK/fer2013" || exit 1
# Build the 60x60 face cache once, before the runs read it side by side.
$PY -c "import sys; from fer_tf.experiments import prepared_dataset; prepared_dataset(sys.argv[1], 'fer2013', sys.argv[2])" \
    "$WORK/fer2013" "$WORK/cache" || exit 1
echo "setup took $(( $(date +%s) - started )) s"

PLAIN=(--set train.rotation=0 --set train.scale=0 --set train.translation=0 --set train.random_erasing=0)
FP32=(--set train.mixed_precision=false)
declare -A ARGS=(
  [paper_full]="--config configs/pretrain-paper.yaml"
  [a1_paper]="--config configs/pretrain-paper.yaml --epochs $ABLATION_EPOCHS --set train.patience=3"
  [a2_cosine]="--epochs $ABLATION_EPOCHS ${PLAIN[*]} --set model.label_smoothing=0 ${FP32[*]}"
  [a3_affine]="--epochs $ABLATION_EPOCHS --set train.random_erasing=0 --set model.label_smoothing=0 ${FP32[*]}"
  [a4_erasing]="--epochs $ABLATION_EPOCHS --set model.label_smoothing=0 ${FP32[*]}"
  [a5_smoothing]="--epochs $ABLATION_EPOCHS ${FP32[*]}"
  [a6_bf16]="--epochs $ABLATION_EPOCHS"
  [recipe_fp32_75]="${FP32[*]}"
)
NAMES=("${!ARGS[@]}")
[ "$SMOKE" = 1 ] && NAMES=(${SMOKE_RUNS:-a1_paper a5_smoothing})
declare -A PIDS=()
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    FER_TF_CACHE="$WORK/cache" $PY pipelines/pretrain.py --data "$WORK/fer2013" ${ARGS[$name]} \
        --set train.time_limit_minutes=$TIME_LIMIT --set train.checkpoint_every=1000 "${EXTRA[@]}" \
        --output "$WORK/runs/$name" --report "$WORK/reports/$name" --publish "$WORK/published/$name" \
        --no-resume > "$WORK/$name.log" 2>&1 &
    PIDS[$name]=$!
done
failed=0
for name in "${!PIDS[@]}"; do
    wait "${PIDS[$name]}"; rc=$?
    echo "$name: exit $rc"
    [ $rc = 0 ] || failed=1
done

for name in "${NAMES[@]}"; do echo "=== $name: ${ARGS[$name]}"; tail -n 4 "$WORK/$name.log"; done > "$OUT/log.txt"
$PY - "$WORK" "$OUT" "${NAMES[@]}" <<'PYEOF'
import json, pathlib, shutil, sys
work, out, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sorted(sys.argv[3:])
merged = {}
for name in names:
    path = work / "reports" / name / "results.json"
    merged[name] = json.loads(path.read_text()) if path.is_file() else {"error": "no results (see log.txt)"}
(out / "results.json").write_text(json.dumps(merged, indent=1))
for name in ("paper_full", "recipe_fp32_75", "a5_smoothing", "a6_bf16"):
    model = work / "runs" / name / "pretrained.keras"
    if model.is_file():
        shutil.copyfile(model, out / f"{name}.keras")
print(f"{'run':16} {'epochs':>6} {'s/epoch':>8} {'PublicTest':>10} {'PrivateTest':>11} {'Private+flip':>12}")
for name, r in merged.items():
    if "history" not in r:
        print(f"{name:16} failed"); continue
    h = r["history"]; secs = [e.get("epoch_seconds", 0) for e in h]
    f = lambda v: "n/a" if v is None else f"{100 * v:.2f}"
    print(f"{name:16} {len(h):6d} {sum(secs) / max(len(secs), 1):8.2f} {f(r['public_test_accuracy']):>10} "
          f"{f(r['private_test_accuracy']):>11} {f(r['private_test_accuracy_flip']):>12}")
PYEOF
echo "total $(( $(date +%s) - started )) s"
exit $failed
