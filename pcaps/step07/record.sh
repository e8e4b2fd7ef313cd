#!/bin/bash
# Records the step 07 golden sessions: step07-wireguard against wireguard-go
# (step 07 initiates) and against boringtun (boringtun initiates), in two
# network namespaces, with the test-only keys of this folder. Run as root
# from the workspace root after `cargo build -p step07-wireguard`:
#
#   sudo pcaps/step07/record.sh
#
# Writes, for PEER in wireguard-go and boringtun:
#   PEER-underlay.pcap   the UDP datagrams on the veth (tcpdump, Ethernet)
#   PEER-tun.pcap        what step07-wireguard read from and wrote to its TUN device
#   PEER.keylog          its --keylog: each handshake's keys, as Wireshark reads them
# The keys are for these recordings only: never use them for anything else.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${STEP07_BIN:-target/debug/step07-wireguard}
p=s7rec$$
cleanup() {
    for ns in ${p}a ${p}b; do
        for pid in $(ip netns pids $ns 2>/dev/null); do kill $pid 2>/dev/null || true; done
    done
    sleep 0.5
    ip netns del ${p}a 2>/dev/null || true
    ip netns del ${p}b 2>/dev/null || true
    rm -f /var/run/wireguard/${p}*.sock
}
trap cleanup EXIT
pub() { wg pubkey < "$here/test-only-$1.key"; }

record() {
    local peer=$1 initiator=$2
    ip netns add ${p}a
    ip netns add ${p}b
    ip link add ${p}va type veth peer name ${p}vb
    ip link set ${p}va netns ${p}a
    ip link set ${p}vb netns ${p}b
    ip -n ${p}a addr add 192.0.2.1/24 dev ${p}va
    ip -n ${p}b addr add 192.0.2.2/24 dev ${p}vb
    for ns in a b; do
        ip -n ${p}$ns link set ${p}v$ns up
        ip -n ${p}$ns link set lo up
        # Whole checksums in the capture (DESIGN.md, field notes).
        ip netns exec ${p}$ns ethtool -K ${p}v$ns tx off >/dev/null
    done
    rm -f "$here/$peer.keylog"
    ip netns exec ${p}a tcpdump --immediate-mode -q -n -U -i ${p}va -w "$here/$peer-underlay.pcap" udp 2>/dev/null &
    local dump=$!
    ip netns exec ${p}a "$bin" -f --pcap "$here/$peer-tun.pcap" --keylog "$here/$peer.keylog" ${p}wa 2>/dev/null &
    case $peer in
        wireguard-go) ip netns exec ${p}b wireguard-go -f ${p}wb >/dev/null 2>&1 & ;;
        boringtun) ip netns exec ${p}b env WG_THREADS=1 boringtun-cli -f --disable-drop-privileges ${p}wb >/dev/null 2>&1 & ;;
    esac
    for _ in $(seq 50); do
        [ -S /var/run/wireguard/${p}wa.sock ] && [ -S /var/run/wireguard/${p}wb.sock ] && break
        sleep 0.1
    done
    local ea="" eb=""
    if [ "$initiator" = tunlab ]; then ea="endpoint 192.0.2.2:51821"; else eb="endpoint 192.0.2.1:51820"; fi
    ip netns exec ${p}a wg set ${p}wa private-key "$here/test-only-tunlab.key" listen-port 51820 \
        peer "$(pub $peer)" preshared-key "$here/test-only.psk" allowed-ips 10.7.0.2/32,fd07::2/128 $ea
    ip netns exec ${p}b wg set ${p}wb private-key "$here/test-only-$peer.key" listen-port 51821 \
        peer "$(pub tunlab)" preshared-key "$here/test-only.psk" allowed-ips 10.7.0.1/32,fd07::1/128 $eb
    ip -n ${p}a addr add 10.7.0.1/24 dev ${p}wa
    ip -n ${p}a addr add fd07::1/64 dev ${p}wa
    ip -n ${p}b addr add 10.7.0.2/24 dev ${p}wb
    ip -n ${p}b addr add fd07::2/64 dev ${p}wb
    # No IPv6 link-local address or router solicitation on the tunnels:
    # only the pings cross them.
    for ns in a b; do
        ip netns exec ${p}$ns sysctl -qw net.ipv6.conf.${p}w$ns.addr_gen_mode=1
        ip -n ${p}$ns link set ${p}w$ns up
    done
    sleep 0.5
    if [ "$initiator" = tunlab ]; then
        ip netns exec ${p}a ping -n -c 3 -i 0.2 -W 2 10.7.0.2 >/dev/null
        ip netns exec ${p}a ping -6 -n -c 3 -i 0.2 -W 2 fd07::2 >/dev/null
    else
        ip netns exec ${p}b ping -n -c 3 -i 0.2 -W 2 10.7.0.1 >/dev/null
        ip netns exec ${p}b ping -6 -n -c 3 -i 0.2 -W 2 fd07::1 >/dev/null
    fi
    sleep 0.5
    kill -INT $dump
    wait $dump || true
    cleanup
    echo "recorded $peer ($initiator initiates)"
}

record wireguard-go tunlab
record boringtun boringtun
