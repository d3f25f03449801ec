#!/usr/bin/env bash
# The GPU device check in one command: install the carried wheels, videogn-doctor, the bench,
# a 100-iteration training run of the full I3D-R50 at 224 (bf16, channels_last_3d, GN) on
# generated 256-px videos, and a 1-process NCCL DDP run. JSON + Markdown go to $OUT.
#   bash benchmarks/gpu/prepare.sh            # here, with PyPI: fills .whl/
#   bash benchmarks/gpu/run.sh                # there (MODE=cuda); see docs/BENCHMARKS.md
#   MODE=cpu bash benchmarks/gpu/run.sh       # anywhere: the same steps, CPU-sized
# Each step has its own time limit (the sum, about 7 min in cuda mode, leaves a 15-minute device
# lease time to rerun); a step that fails or times out is recorded and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
MODE=${MODE:-cuda}
OUT=${OUT:-$REPO/outputs/device_check}
WHEELS=${WHEELS:-$REPO/.whl}
SITE=${SITE:-/tmp/videogn_site}
WORK=${WORK:-/tmp/videogn_device_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/run.log") 2>&1

# No registry there: the wheels from prepare.sh, without their dependencies (the image has them).
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$REPO:$SITE" PYTHONUNBUFFERED=1

if [ "$MODE" = cuda ]; then
    DEVICE=cuda; BENCH=(); LIMITS=(45 240 150 60); ITERATIONS=100
    TRAIN=(model=i3d_r50 norm=gn sampler=32x2 data.batch_size=8 data.num_workers=12
           data.scale_range=[256,320] data.crop_size=224 data.demo.params.frame_size=256
           data.demo.params.frames_per_video=72 data.demo.params.train_videos_per_class=4
           data.demo.params.val_videos_per_class=1 optim.epochs=25 trainer.amp=bf16
           trainer.channels_last_3d=true model.dropout=0.0)
else
    DEVICE=cpu; BENCH=(--quick); LIMITS=(120 600 600 300); ITERATIONS=20
    TRAIN=(data.num_classes=4 data.batch_size=4 data.num_workers=1 sampler=8x2
           data.scale_range=[32,36] data.crop_size=32 data.demo.params.frames_per_video=24
           data.demo.params.train_videos_per_class=4 data.demo.params.val_videos_per_class=1
           data.demo.params.event_gap=8 data.demo.params.event_length=2 optim.epochs=5
           trainer.num_threads=1)
fi

status=0
step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, record the outcome
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    echo "| $name | $rc | $((SECONDS - start)) |" >> "$OUT/steps.md"
    [ $rc -eq 0 ] || status=1
}
echo "| step | exit | seconds |" > "$OUT/steps.md"; echo "|---|---|---|" >> "$OUT/steps.md"

step doctor "${LIMITS[0]}" "$PYTHON" -m videogn.cli.doctor
step bench "${LIMITS[1]}" "$PYTHON" -m videogn.cli.doctor --bench --device "$DEVICE" ${BENCH[@]+"${BENCH[@]}"} \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md" --videos-dir "$WORK/videos"
TRAIN_DIR="$WORK/train_${MODE}_$(date +%s)"  # fresh: a rerun must not resume
step train "${LIMITS[2]}" "$PYTHON" -m videogn.cli.train "${TRAIN[@]}" device="$DEVICE" \
    data.demo.cache_dir="$WORK/demo_$MODE" hydra.run.dir="$TRAIN_DIR" \
    trainer.max_iterations=$ITERATIONS trainer.log_period=1 trainer.progress_bar=false \
    trainer.test_at_end=false trainer.val_period=0
step train_check 30 "$PYTHON" benchmarks/gpu/check_train.py "$TRAIN_DIR" \
    --iterations $ITERATIONS --out "$OUT/train.json"
step ddp "${LIMITS[3]}" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 \
    benchmarks/gpu/ddp_check.py --out "$OUT/ddp.json"
cat "$OUT/steps.md"
exit $status
