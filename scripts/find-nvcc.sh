# Sourced by the scripts that need nvcc (check-cuda.sh, cuda-host-check.sh): sets NVCC to $NVCC if given, else
# nvcc on PATH, else /usr/local/cuda/bin/nvcc; empty when there is none (the caller says it skips).
NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc)
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
