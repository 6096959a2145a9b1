#!/usr/bin/env bash
# The entry point of a pack on the GPU machine: pipelines/device/pack.py copies this file to
# .device/start.sh. From the repository root, with the device tool:
#                run  command="bash .device/start.sh"  carry=[".device"]   (MODE=accuracy3 etc. pass through)
# Locally, as a smoke test:  SMOKE=1 PY=.venv/bin/python OUT=/tmp/out bash .device/start.sh
#
# Unpacks .device/code.tar.xz (src/: the code of the packed commit; site/: Keras and the two
# dependencies the machine lacks, unpacked from their wheels) into CODE and runs the packed task's
# script from src/: run.sh for `pack.py` (FER2013 pretraining), finetune.sh for `pack.py --task
# finetune`. The code travels xz-compressed because the device's 64 MiB, tracked files included,
# leave little room beside the FER2013 images.
set -euo pipefail
PACK=$(cd "$(dirname "$0")" && pwd)
CODE=${CODE:-/tmp/fer_tf_code}
case "$(cat "$PACK/TASK" 2>/dev/null)" in
    pretrain) script=run.sh ;;
    finetune) script=finetune.sh ;;
    *) echo "error: $PACK/TASK names no task; run python pipelines/device/pack.py first" >&2; exit 1 ;;
esac
rm -rf "$CODE" && mkdir -p "$CODE" && tar -xJf "$PACK/code.tar.xz" -C "$CODE"
case "${PY:-}" in */*) [ "${PY#/}" = "$PY" ] && PY="$PWD/$PY" ;; esac  # the script runs from src/
export PACK PY FER_TF_DEVICE_SITE="$CODE/site"
exec bash "$CODE/src/pipelines/device/$script"
