#!/usr/bin/env bash
# One config on NGPUS GPUs of this node with torchrun (Lightning reads torchelastic's environment); every rank
# gets the same argv. Usage: sweeps/torchrun.sh NGPUS CONFIG [overrides...]   (docs/sweeps.md)
#   sweeps/torchrun.sh 8 experiments/table4/wo_order.yaml seed=1 output_dir=runs/table4/wo_order/seed1
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 NGPUS CONFIG [overrides...]" >&2
    exit 2
fi
NPROC="$1"
shift
exec torchrun --standalone --nproc_per_node="$NPROC" -m ois_lightning train "$@" \
    train.strategy=ddp train.devices="$NPROC" train.num_nodes=1
