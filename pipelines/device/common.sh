# Shared by run.sh and finetune.sh (sourced, not run). Uses SMOKE, PACK, DEADLINE and started.

# Python for the run: on the device, python3 with the packed site/ (Keras and the dependencies the
# machine lacks, unpacked from their wheels by start.sh; JAX is there already); with SMOKE=1, PY
# (default python) on this machine with the packages it has. Then the environment every run needs:
# the JAX backend, the packed code first on the path, and the packed commit as the provenance of
# every result.
device_setup() {
    if [ "$SMOKE" = 1 ]; then
        PY=${PY:-python}
    else
        PY=python3
        export PYTHONPATH=${FER_TF_DEVICE_SITE:?start the pack with bash .device/start.sh}
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    export GIT_DIR=/nonexistent-fer-tf  # the packed commit names the code, not any repository around it
    export XLA_PYTHON_CLIENT_PREALLOCATE=false FER_TF_SOURCE_COMMIT="$(cat "$PACK/SOURCE_COMMIT")"
}

# wait_for INTERVAL PATTERN PROGRESS PID...: every INTERVAL seconds, call the function PROGRESS,
# until every PID has ended; at DEADLINE seconds after $started, interrupt the processes whose
# command line matches PATTERN (they keep what they finished) and return.
wait_for() {
    local interval=$1 pattern=$2 progress=$3 running pid
    shift 3
    while :; do
        running=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
        [ $running = 0 ] && return 0
        if [ $(( $(date +%s) - started )) -ge "$DEADLINE" ]; then
            echo "deadline: interrupting $running process(es)"
            pkill -INT -f "$pattern"
            sleep 20
            return 0
        fi
        sleep "$interval"
        echo "--- $(( $(date +%s) - started )) s"
        "$progress"
    done
}
