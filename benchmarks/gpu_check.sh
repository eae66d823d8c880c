#!/usr/bin/env bash
# The GPU check in one command (under 8 minutes on one H100/H200), written to results/gpu/:
#   1. the gpu-marked tests (CUDA against CPU parity, dense and conv nets),
#   2. the GPU throughput variant of benchmarks/throughput.py (pcsim contenders),
#   3. 2 epochs of the VGG-5 PC and BP configs: s/epoch, test accuracy, peak GPU memory.
# Usage: bash benchmarks/gpu_check.sh [DATA_ROOT]   (else $PCSIM_DATA; MNIST/Fashion-MNIST
# writable there, CIFAR-10 read in place). Without CUDA it stops before measuring anything.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${PCSIM_DATA:-}}"
OUT="${PCSIM_GPU_OUT:-results/gpu}"
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device here; nothing measured, nothing written" >&2
    exit 2
fi
mkdir -p "$OUT"
DATA_ARGS=()
if [ -n "$DATA" ]; then DATA_ARGS=(--data-root "$DATA"); export PCSIM_DATA="$DATA"; fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || "$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "torch: $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} | tee "$OUT/machine.txt"
start=$(date +%s)
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/engines/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
"$PY" benchmarks/throughput.py --device cuda --compile --rounds 1 --out "$OUT/throughput" \
    "${DATA_ARGS[@]}" 2>&1 | tee "$OUT/throughput.log"
"$PY" benchmarks/gpu_epochs.py networks/cifar10_pc_vgg5.yaml networks/cifar10_bp_vgg5.yaml \
    --epochs 2 --out "$OUT" "${DATA_ARGS[@]}" 2>&1 | tee "$OUT/epochs.log"
echo "gpu_check: done in $(( $(date +%s) - start )) s; results in $OUT" | tee -a "$OUT/machine.txt"
