#!/bin/sh
# chassis_control program for ipmi_sim in Ferric's IPMI tests: the machine's power and boot
# device live in files under $1, which the tests read as the BMC's independent record.
# Called by ipmi_sim as: chassis_control.sh <dir> get power|boot ...
#                         chassis_control.sh <dir> set power|reset|shutdown|boot|identify <value>...
# Files in <dir>: power (0|1), boot (none|pxe|default|cdrom|bios), commands.log (one line per
# call), soft_off_delay (seconds, or "never"; default never), fail (present: every call fails),
# soft_off.pid (process group of a pending soft off).
#
# ipmi_sim runs this synchronously and reads its stdout to EOF, freezing the whole simulator
# meanwhile: it must return at once, and a pending soft off runs in a fully detached process
# (own session, every standard fd redirected) that the test harness kills by its group.

dir=$1
shift
op=$1
shift
echo "$op $*" >> "$dir/commands.log"

if [ -f "$dir/fail" ]; then
    echo "simulated chassis failure"
    exit 1
fi

power() {
    cat "$dir/power" 2>/dev/null || echo 0
}

# Replaces the power file in one step: a concurrent "get power" (ipmi_sim runs this program
# while the soft-off child may be writing) must never read it empty.
write_power() {
    echo "$1" > "$dir/power.$$" && mv -f "$dir/power.$$" "$dir/power"
}

# A hard power change overrides a pending soft off, as on a real machine.
cancel_soft_off() {
    if [ -f "$dir/soft_off.pid" ]; then
        kill -KILL -- "-$(cat "$dir/soft_off.pid")" 2>/dev/null
        rm -f "$dir/soft_off.pid"
    fi
}

soft_off() {
    delay=$(cat "$dir/soft_off_delay" 2>/dev/null || echo never)
    if [ "$(power)" != 1 ] || [ "$delay" = never ] || [ -f "$dir/soft_off.pid" ]; then
        return
    fi
    # setsid makes the child a process group leader; it records its own pid (= group id)
    # before sleeping, so the pid file never names a process that is gone.
    setsid sh -c 'echo $$ > "$2/soft_off.pid"; sleep "$1"; echo 0 > "$2/power.$$"; mv -f "$2/power.$$" "$2/power"; rm -f "$2/soft_off.pid"' \
        soft-off "$delay" "$dir" < /dev/null > /dev/null 2>&1 &
}

case $op in
get)
    for parm in "$@"; do
        case $parm in
        power) echo "power:$(power)" ;;
        boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
        *)
            echo "Invalid parameter: $parm"
            exit 1
            ;;
        esac
    done
    ;;
set)
    while [ $# -ge 2 ]; do
        parm=$1
        val=$2
        shift 2
        case $parm in
        power)
            cancel_soft_off
            write_power "$val"
            ;;
        reset) ;; # a pulse on the reset line: power stays as it is
        shutdown) soft_off ;;
        boot) echo "$val" > "$dir/boot" ;;
        identify) [ $# -ge 1 ] && shift ;; # interval, then the force flag
        *)
            echo "Invalid parameter: $parm"
            exit 1
            ;;
        esac
    done
    ;;
*)
    echo "Unknown operation: $op"
    exit 1
    ;;
esac
exit 0
