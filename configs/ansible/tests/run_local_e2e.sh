#!/usr/bin/env bash
# Runs deploy-policy.yml for real against this machine (connection=local)
# and a real tlswalld: the daemon runs in a network namespace of its own on a
# veth named eth0, with a temporary policy directory, control socket, events
# file and its own bpffs pin root, all removed on exit (also on failure).
# Host interfaces are never touched.
#
#   configs/ansible/tests/run_local_e2e.sh <build-dir>
#
# Needs root, ansible-core (apt-get install ansible-core), iproute2, and a
# build with agent/tlswalld and agent/tlswallctl (or agent/control/tlswallctl).
set -euo pipefail

BUILD=$(readlink -f "${1:?usage: $0 <build-dir>}")
HERE=$(cd "$(dirname "$0")" && pwd)
ANSIBLE_DIR=$(dirname "$HERE")
REPO=$(cd "$ANSIBLE_DIR/../.." && pwd)
TLSWALLD=$BUILD/agent/tlswalld
TLSWALLCTL=$BUILD/agent/tlswallctl
[ -x "$TLSWALLCTL" ] || TLSWALLCTL=$BUILD/agent/control/tlswallctl
for x in "$TLSWALLD" "$TLSWALLCTL"; do [ -x "$x" ] || { echo "missing $x" >&2; exit 2; }; done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
command -v ansible-playbook >/dev/null || { echo "ansible-playbook not installed" >&2; exit 2; }

NS=tw-ansible-$$
WORK=$(mktemp -d /tmp/tw-ansible-XXXXXX)
PIN=$WORK/bpffs
SOCK=$WORK/control.sock
DAEMON_PID=
cleanup() {
  set +e
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    "$TLSWALLCTL" --socket "$SOCK" --pin-root "$PIN" teardown --open >/dev/null 2>&1
    kill "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  ip netns del "$NS" 2>/dev/null
  mountpoint -q "$PIN" && umount "$PIN"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# The daemon's world: a namespace with an eth0, a bpffs of our own.
ip netns add "$NS"
ip -n "$NS" link add eth0 type veth peer name peer0
ip -n "$NS" link set lo up
ip -n "$NS" link set eth0 up
mkdir -p "$PIN" "$WORK/etc/policy.d" "$WORK/state" "$WORK/src"
mount -t bpf bpf "$PIN"

policy() {  # policy VERSION -> a valid policy file on stdout
  sed "s/^version = .*/version = \"$1\"/" "$REPO/configs/policy.d/default.toml"
}
policy initial > "$WORK/etc/policy.d/default.toml"
cat > "$WORK/tlswalld.toml" <<TOML
interfaces = ["eth0"]
policy = "$WORK/etc/policy.d"
pin_root = "$PIN"
on_stop = "detach"
[control]
socket = "$SOCK"
[events]
json_file = "$WORK/events.jsonl"
state_dir = "$WORK/state"
TOML
ip netns exec "$NS" "$TLSWALLD" --config "$WORK/tlswalld.toml" >"$WORK/tlswalld.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 50); do
  "$TLSWALLCTL" --socket "$SOCK" status --json >/dev/null 2>&1 && break
  sleep 0.2
done
"$TLSWALLCTL" --socket "$SOCK" status --json >/dev/null || { cat "$WORK/tlswalld.log"; exit 1; }

cat > "$WORK/inventory.ini" <<INI
[tlswall]
localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3
INI
play() {  # play SRC_DIR [extra ansible args...]
  local src=$1; shift
  ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg ANSIBLE_NOCOLOR=1 ansible-playbook \
    -i "$WORK/inventory.ini" "$ANSIBLE_DIR/deploy-policy.yml" \
    -e "tlswall_policy_src_dir=$src" -e "tlswall_policy_dir=$WORK/etc/policy.d" \
    -e "tlswall_ctl=$TLSWALLCTL" -e "{\"tlswall_ctl_args\": [\"--socket\", \"$SOCK\"]}" \
    -e tlswall_converge_delay=1 -e tlswall_converge_retries=10 "$@"
}
hash_in_force() { "$TLSWALLCTL" --socket "$SOCK" status --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["policy"]["hash"])'; }
hash_of() { "$TLSWALLCTL" policy check "$1" | sed -n 's/.*hash \([0-9a-f]\{64\}\).*/\1/p'; }
fail() { echo "FAIL: $*" >&2; echo "--- tlswalld log:" >&2; tail -20 "$WORK/tlswalld.log" >&2; exit 1; }
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# 1. A new policy (two files) plus a stale file on the host that is pruned.
mkdir -p "$WORK/src/v2"
policy v2 > "$WORK/src/v2/default.toml"
# A second file: the partner example without the keys only one file may set.
grep -Ev '^(version|default_mode|default_min_tls) =' "$REPO/configs/examples/partner-network.toml" \
  > "$WORK/src/v2/partner.toml"
policy stale > "$WORK/etc/policy.d/zz-stale.toml"
play "$WORK/src/v2" > "$WORK/play1.log" 2>&1 || { cat "$WORK/play1.log"; fail "deploy v2"; }
[ "$(hash_in_force)" = "$(hash_of "$WORK/src/v2")" ] || fail "v2 not in force"
[ ! -e "$WORK/etc/policy.d/zz-stale.toml" ] || fail "stale file not pruned"
grep -q "changed=[1-9]" "$WORK/play1.log" || fail "first run changed nothing"
ok "deploy validated, installed, pruned, converged on $(hash_of "$WORK/src/v2" | cut -c1-12)"

# 2. The same again: nothing changes, still converged.
play "$WORK/src/v2" > "$WORK/play2.log" 2>&1 || { cat "$WORK/play2.log"; fail "re-run"; }
grep -q "changed=0" "$WORK/play2.log" || { cat "$WORK/play2.log"; fail "re-run not idempotent"; }
ok "second run changed nothing"

# 3. An invalid policy: the play fails with the error, nothing installed.
mkdir -p "$WORK/src/bad"
cp "$WORK/src/v2/"*.toml "$WORK/src/bad/"
printf '\n[[rules]]\nname = "broken"\nboundary = "no-such-boundary"\nports = [443]\n' >> "$WORK/src/bad/default.toml"
before=$(hash_in_force)
if play "$WORK/src/bad" > "$WORK/play3.log" 2>&1; then cat "$WORK/play3.log"; fail "invalid policy deployed"; fi
grep -q "rejected the policy" "$WORK/play3.log" || { cat "$WORK/play3.log"; fail "no rejection message"; }
grep -q "no-such-boundary" "$WORK/play3.log" || { cat "$WORK/play3.log"; fail "the validator's error is not shown"; }
cmp -s "$WORK/src/v2/default.toml" "$WORK/etc/policy.d/default.toml" || fail "invalid policy touched the host"
[ "$(hash_in_force)" = "$before" ] || fail "policy in force changed"
[ -z "$(ls -A "$WORK/etc" | grep -v '^policy.d$')" ] || fail "staging directory left behind: $(ls -A "$WORK/etc")"
ok "invalid policy stopped the play with the validator's error; host untouched"

# 4. --check validates on the host and installs nothing.
mkdir -p "$WORK/src/v3"
policy v3 > "$WORK/src/v3/default.toml"
play "$WORK/src/v3" --check > "$WORK/play4.log" 2>&1 || { cat "$WORK/play4.log"; fail "check mode"; }
cmp -s "$WORK/src/v2/default.toml" "$WORK/etc/policy.d/default.toml" || fail "--check installed"
if play "$WORK/src/bad" --check > "$WORK/play5.log" 2>&1; then fail "--check accepted an invalid policy"; fi
ok "--check validates without installing"

# 5. No convergence (here: the daemon cannot be asked): the play fails and says why.
if play "$WORK/src/v3" -e tlswall_policy_reload=false -e tlswall_converge_retries=2 \
    -e '{"tlswall_ctl_args": ["--socket", "/nonexistent/control.sock"]}' > "$WORK/play6.log" 2>&1; then
  fail "converged without a daemon"
fi
grep -q "does not enforce the deployed policy $(hash_of "$WORK/src/v3")" "$WORK/play6.log" ||
  { cat "$WORK/play6.log"; fail "no convergence message"; }
grep -q "tlswallctl status failed" "$WORK/play6.log" || { cat "$WORK/play6.log"; fail "no reason"; }
grep -o 'tlswalld does not enforce[^"]*' "$WORK/play6.log" | head -1
ok "no convergence fails the play with the expected hash and the reason"

# 6. Deployed where the daemon does not read: the play names what is in force and where.
mkdir -p "$WORK/elsewhere/policy.d" "$WORK/src/v4"
policy v4 > "$WORK/src/v4/default.toml"
if play "$WORK/src/v4" -e tlswall_converge_retries=2 -e "tlswall_policy_dir=$WORK/elsewhere/policy.d" \
    > "$WORK/play7.log" 2>&1; then
  fail "converged on a directory the daemon does not read"
fi
grep -o 'tlswalld does not enforce[^"]*' "$WORK/play7.log" | head -1
grep -q "In force: hash $(hash_in_force)" "$WORK/play7.log" || { cat "$WORK/play7.log"; fail "no in-force hash"; }
grep -q "read from $WORK/etc/policy.d (is that $WORK/elsewhere/policy.d?)" "$WORK/play7.log" ||
  { cat "$WORK/play7.log"; fail "no path hint"; }
ok "a daemon reading another path fails the play with the hash in force and its path"

echo "$passed passed, 0 failed"
