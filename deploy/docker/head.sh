#!/bin/sh
# The compose stack's Ray head: a Ray head node, then `kisray up` joined to it as the driver
# (migrations, the Serve app, and in the production profile the collector actors).
# Arguments are passed to `kisray up`. SIGTERM (docker stop) stops kisray first, then the node.
set -eu

# Direct ingress: the Serve replica itself answers on the API port (api/ingress.py); kisray up
# sees the same environment and moves Serve's proxy out of the way. With KISRAY_REPLICAS > 1 the
# replicas get their own port range and kisray up puts haproxy on the API port.
export $(python -m api.ingress "${KISRAY_PORT:-8000}")

ray start --head --block --port=6379 --dashboard-host=0.0.0.0 --disable-usage-stats \
    --num-cpus="${KISRAY_HEAD_CPUS:-2}" &
ray_pid=$!

stop() {
    [ -n "${kisray_pid:-}" ] && kill -TERM "$kisray_pid" 2>/dev/null && wait "$kisray_pid" || true
    kill -TERM "$ray_pid" 2>/dev/null && wait "$ray_pid" || true
    exit 0
}
trap stop TERM INT

# `ray start --block` never returns while the node is up; wait for its GCS to accept clients.
tries=0
until ray status >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ] || ! kill -0 "$ray_pid" 2>/dev/null; then
        echo "head.sh: the Ray head did not come up" >&2
        exit 1
    fi
    sleep 1
done

kisray up --address=auto "$@" &
kisray_pid=$!
status=0
wait "$kisray_pid" || status=$?
kill -TERM "$ray_pid" 2>/dev/null && wait "$ray_pid" || true
exit "$status"
