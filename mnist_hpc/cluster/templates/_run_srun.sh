# rank 0 listens on the first node of the allocation, on a port derived from the job id
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
export MASTER_ADDR MASTER_PORT
# The time-limit warning (--signal without B:) goes to every task of the step: each rank
# sees it, they checkpoint together and rank 0 requeues the job. `exec` keeps no shell between.
exec srun --cpus-per-task="$SLURM_CPUS_PER_TASK" "$PYTHON" -m mnist_hpc "${args[@]}"
