#!/bin/bash
# Multi-node training under SLURM: one `accelerate launch` per node, each starting one process
# per GPU. Usage (from the repository root, with the environment that has accel_trainer):
#
#   sbatch scripts/slurm_multinode.sh recipes/imagenet/resnest50d.toml [--set KEY=VALUE ...]
#
# Node count and GPUs per node come from the #SBATCH lines (or sbatch's own flags, e.g.
# `sbatch --nodes 4 ...`). The rest of accelerate_configs/multi_node.yaml is reused; this script
# fills in what only SLURM knows: how many machines, which one this is and where rank 0 lives.
#
# Preemption and time limits: SLURM sends USR1 to this script 120 s before the limit (or before a
# preemption kill). The script passes SIGTERM on to the training processes, which finish their
# current step, write a checkpoint of it and exit; then it requeues the job. Every start passes
# `--resume auto`, so the requeued job continues from that checkpoint (the first one starts fresh).
#SBATCH --job-name=accel_trainer
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=slurm-%j.out

set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch $0 RECIPE.toml [accel_trainer arguments ...]" >&2
    exit 2
fi

GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((SLURM_CPUS_PER_TASK / GPUS_PER_NODE))}

echo "nodes: $SLURM_JOB_NODELIST, main process on $MAIN_PROCESS_IP:$MAIN_PROCESS_PORT, $NUM_PROCESSES processes"

requeue() {
    echo "$(date): signal received, checkpointing and requeueing job $SLURM_JOB_ID"
    kill -TERM "$SRUN_PID" 2>/dev/null || true
    wait "$SRUN_PID" || true
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
trap requeue USR1  # not TERM: scancel must not requeue

# SLURM_NODEID differs per node, so it is expanded by the shell srun starts there (single quotes).
# srun runs in the background so that the trap can run while training goes on.
# shellcheck disable=SC2016
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
    exec accelerate launch \
        --config_file accelerate_configs/multi_node.yaml \
        --num_machines "$SLURM_NNODES" \
        --num_processes "$0" \
        --machine_rank "$SLURM_NODEID" \
        --main_process_ip "$1" \
        --main_process_port "$2" \
        -m accel_trainer "${@:3}" --resume auto
' "$NUM_PROCESSES" "$MAIN_PROCESS_IP" "$MAIN_PROCESS_PORT" "$@" &
SRUN_PID=$!
wait "$SRUN_PID"
