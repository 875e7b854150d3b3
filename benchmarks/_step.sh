# Sourced by gpu_check.sh and mpi_gpu_check.sh (which set LOG first).
step() {  # step NAME SECONDS COMMAND...: run with a limit, log the time and the exit status
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
    start=$(date +%s)
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $(( $(date +%s) - start ))s" | tee -a "$LOG"
}
