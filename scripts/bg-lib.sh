# scripts/bg-lib.sh: the background processes a script starts, and stopping all of them when it ends.
# Sourced by scripts/image-lib.sh; tested on its own by tests/test_bg_lib.py (the image tests need root).
#
# Why process groups: a command started through a wrapper (a shell function, chroot, env, setpriv) is a
# tree of processes, and `$!` is the wrapper's PID. Killing that PID leaves the process inside running
# (the cart-pole SITL of `make image-test` was found still bound to UDP 14550 long after the test had
# ended). So each command gets a process group of its own, and stopping it signals the whole group.
# shellcheck shell=bash

BG_GROUPS=()  # process group ids (= the PID of the job bash forked) of what bg_start started

# bg_start CMD [ARG...]: CMD (a program or a shell function) in the background, in a process group of its
# own. Redirections on the call apply to it: `bg_start in_root prog > log 2>&1`, `bg_start prog <<'EOF'`.
bg_start() {
    local had_m=0
    [[ $- == *m* ]] && had_m=1
    set -m  # job control: the job forked next leads a new process group (its PID is the group id)
    if [ -t 0 ]; then
        "$@" < /dev/null &  # as bash does without job control: a background group reading the terminal would stop
    else
        "$@" &  # a here-document or a pipe goes through
    fi
    BG_GROUPS+=($!)
    [ "$had_m" = 1 ] || set +m
}

# bg_group_alive GROUP: the live processes of a process group, one "PID ARGS" a line (zombies excluded:
# they hold no socket and only wait for whichever parent reaps them). Empty when nothing is left.
bg_group_alive() {
    ps -e -o pid=,pgid=,stat=,args= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ { $2 = ""; $3 = ""; print }'
}

# bg_stop_all: SIGTERM to every group bg_start made, SIGKILL to whatever is left of a group after
# BG_STOP_GRACE_S seconds (default 5); returns 1 (after saying which) if a process still outlives that.
bg_stop_all() {
    local g deadline left rc=0
    for g in "${BG_GROUPS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    deadline=$((SECONDS + ${BG_STOP_GRACE_S:-5}))
    for g in "${BG_GROUPS[@]}"; do
        while [ -n "$(bg_group_alive "$g")" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if [ -n "$(bg_group_alive "$g")" ]; then
            kill -KILL -- "-$g" 2>/dev/null || true
            sleep 0.2
        fi
        left=$(bg_group_alive "$g")
        if [ -n "$left" ]; then
            echo "bg_stop_all: still running in process group $g: $left" >&2
            rc=1
        fi
    done
    BG_GROUPS=()
    return "$rc"
}

# udp_port_bound PORT: true if a socket (IPv4 or IPv6) is bound to local UDP port PORT in this network
# namespace (read from /proc/net/udp*, so no ss or netstat is needed).
udp_port_bound() {
    local hex f tables=()
    hex=$(printf ':%04X' "$1")
    for f in /proc/net/udp /proc/net/udp6; do [ -r "$f" ] && tables+=("$f"); done
    [ "${#tables[@]}" -gt 0 ] || return 1
    awk -v p="$hex" 'FNR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "${tables[@]}"
}
