#!/usr/bin/env bash
# One GPU sitting of the engine's benchmarks, each step under its own time limit so one slow step cannot
# take the rest, and skipped when the sitting's budget has no room left for it:
#   0. gsplat's JIT build, on its own (run nothing else on the machine's CPUs during the timed steps), always
#      first, whatever ONLY names (a reinstalled gsplat rebuilds; a step that starts the build times out);
#   1. the GPU tests (tests that skip without CUDA), with short tracebacks;
#   2. fit_bench's static case, three runs each with the defaults (graphed update), with the eager update
#      and with the depth channel rendered (the fits' former render), three A/B pairs of the position
#      schedule (DreamGaussian's sphere start, the default, against the former Table 3 rate), and the
#      profiles of the first two;
#   3. the SDS step (its first step, which compiles, apart) and its profile;
#   4. fit_bench's orbital case (the Diffusion4D construction), twice as shipped (8 frames a fine step),
#      twice with 16, and a profile of its fine stage (at a tenth of the lengths); the Zero123-guided CoCo4D
#      foreground (twice in one process: a process's first fit, which compiles the guidance's passes, and one
#      after it; then in a new process, which finds the compiled passes in inductor's on-disk cache), again
#      with graphs of the uncompiled passes
#      and with its VAE encoder eager (the A/Bs of torch.compile and of the encoder's CUDA graphs), and a
#      profile of its static stage;
#   5. a posed-frames dataset exported from the object world, PosedFrames4D's nodes fitted on it, and the
#      PSNR-against-time curve of bench/plans/goal_curve.json.
# Every log lands in OUTDIR; the JSON rows of each bench in OUTDIR/*.json.
#
# Usage: bash bench/gpu_sitting.sh OUTDIR [SECONDS]     (SECONDS: the sitting's budget, default 560)
#        ONLY="static sds_step" bash bench/gpu_sitting.sh OUTDIR   runs the named steps alone
set -u
OUT_DIR=${1:?usage: bash bench/gpu_sitting.sh OUTDIR [SECONDS]}
BUDGET=${2:-560}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
START=$(date +%s)
PY=${PYTHON:-python3}

left() { echo $(( BUDGET - ( $(date +%s) - START ) )); }

# step NAME SECONDS COMMAND...: run COMMAND under a limit of SECONDS (less if the budget is shorter),
# logging to OUTDIR/NAME.log and echoing its summary lines; skipped when fewer than 20 s are left.
step() {
    local name=$1 limit=$2
    shift 2
    [ -n "${ONLY:-}" ] && [ "$name" != gsplat_build ] && [[ " $ONLY " != *" $name "* ]] && return
    local budget
    budget=$(left)
    if [ "$budget" -lt 20 ]; then
        echo "[$(( $(date +%s) - START ))s] $name: skipped (budget spent)"
        return
    fi
    [ "$limit" -gt "$budget" ] && limit=$budget
    echo "[$(( $(date +%s) - START ))s] $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    grep -hE '^\{|passed|failed|FAILED|Error|host per step|kernel launches|SDS step under|PSNR|gsplat:' "$OUT_DIR/$name.log" \
        | cut -c1-400 | tail -12
    [ $rc -ne 0 ] && echo "  $name exited with $rc"
}

EAGER_UPDATE='{"static": {"graphed_update": false}}'
# gsplat compiles on first import (about 80 s on a fresh machine). Built here under its own limit, a step
# with a short one never times out in the build, nor leaves a half-built extension to the steps after it.
step gsplat_build 240 "$PY" -c "from gsplat.cuda._backend import _C; assert _C is not None; print('gsplat: ready')"
step gpu_tests 300 "$PY" -m pytest -q -p no:cacheprovider --tb=short -rf tests/test_image_filter.py \
    tests/test_graphed_loss.py tests/test_graphed_update.py tests/test_guidance_gpu.py tests/test_fit_step_gpu.py \
    tests/test_graphed_forward.py tests/test_graphed_backward.py tests/test_graphed_deformation_gpu.py tests/test_render_gpu.py \
    tests/test_joint_render.py tests/test_render_each.py
step static 70 "$PY" bench/fit_bench.py --case static --repeat 3 --json "$OUT_DIR/static.json"
step static_eager_update 70 "$PY" bench/fit_bench.py --case static --repeat 3 --changes "$EAGER_UPDATE" \
    --json "$OUT_DIR/static_eager_update.json"
step static_with_depth 70 "$PY" bench/fit_bench.py --case static --repeat 3 --with-depth \
    --json "$OUT_DIR/static_with_depth.json"
# the default position schedule (DreamGaussian's sphere start: 1e-2 to 2e-4 by step 500, then held) against the
# former one (Table 3's 1e-3 decaying to 1e-5 over the fit), side by side
step static_position_schedule 110 "$PY" bench/fit_bench.py --case static --repeat 3 \
    --json "$OUT_DIR/static_position_schedule.json" \
    --versus '{"static": {"learning_rates": {"position": 0.001, "position_final_ratio": 0.01}}}'
step static_profile 50 "$PY" bench/fit_bench.py --case static --scale 0.1 --profile
step static_eager_update_profile 50 "$PY" bench/fit_bench.py --case static --scale 0.1 --profile --changes "$EAGER_UPDATE"
step sds_step 200 "$PY" bench/guidance_bench.py --case step --profile
step orbital 140 "$PY" bench/fit_bench.py --case orbital --repeat 2 --json "$OUT_DIR/orbital.json"
step orbital_16_frames 130 "$PY" bench/fit_bench.py --case orbital --repeat 2 --json "$OUT_DIR/orbital_16_frames.json" \
    --changes '{"fine": {"times_per_step": 16}}'
step orbital_profile 90 "$PY" bench/fit_bench.py --case orbital --scale 0.1 --profile
step guided_fit 300 "$PY" bench/guidance_bench.py --case fit --repeat 2
# a new process, as a ComfyUI restart is: its passes come from the compile of the step before, on disk
step guided_fit_new_process 200 "$PY" bench/guidance_bench.py --case fit
step guided_fit_uncompiled 130 "$PY" bench/guidance_bench.py --case fit --no-compile
step guided_fit_eager_encoder 130 "$PY" bench/guidance_bench.py --case fit --eager-encoder
step guided_fit_profile 130 "$PY" bench/guidance_bench.py --case fit --profile
[ -f /tmp/gen4d_pf/transforms_test.json ] || step export 90 "$PY" bench/posed_frames_bench.py \
    --export-synthetic /tmp/gen4d_pf
step posed_frames_nodes 150 "$PY" bench/posed_frames_bench.py /tmp/gen4d_pf --via nodes --json "$OUT_DIR/pf_nodes.json"
step goal_curve 160 "$PY" bench/posed_frames_sweep.py /tmp/gen4d_pf bench/plans/goal_curve.json \
    --json "$OUT_DIR/goal_curve.json"
echo "[$(( $(date +%s) - START ))s] sitting done; logs in $OUT_DIR"
