#!/usr/bin/env bash
# Install every Debian package the project needs (Debian 12, run as root or
# through sudo).  Idempotent and quiet: packages already installed are
# skipped, `apt-get update` runs only when the package lists are missing or
# stale, and apt's output is shown only when something fails.
#
#   scripts/install-system-packages.sh          # install what is missing
#   scripts/install-system-packages.sh --list   # print the package list
#
# Exit status: 0 when every package is installed, non-zero otherwise.
set -euo pipefail

PACKAGES=(
    # a virtual environment, and libvirt-python builds from source against these
    python3-venv python3-dev libvirt-dev pkg-config gcc make
    # a real libvirtd with the QEMU driver (the storage driver with its dir/fs
    # backend is part of libvirt-daemon on Debian 12) and virsh
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
    # qemu-img: libvirt creates the qcow2 copy-on-write overlays with it
    qemu-utils
    # libvirt networks: dnsmasq for DHCP/DNS, iptables for NAT forwarding
    dnsmasq-base iptables
    # the e2e test guest (busybox initramfs) and NoCloud seeds
    busybox-static cpio genisoimage cloud-init
    # tests/infra: private Slurm clusters (slurmdbd + MariaDB accounting),
    # network namespaces with veth/bridges, an sshd login host
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client
    openssh-server openssh-client iproute2 iputils-ping util-linux socat
    # cm singularity: SIF images (squashfs root + siftool), debootstrap roots
    squashfs-tools
    siftool
    debootstrap
    # building Apptainer from its Go module source for the tests (seccomp, cryptsetup headers)
    libseccomp-dev
    libcryptsetup-dev
)

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-system-packages: not root and no sudo; missing: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT

apt_update() {
    "${SUDO[@]}" apt-get update -q >>"$log" 2>&1
}

# Package lists are needed when there are none, or when apt does not know a
# package we want (lists older than the package).
lists_ok=1
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    lists_ok=0
else
    for pkg in "${missing[@]}"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
            lists_ok=0
            break
        fi
    done
fi
if [[ $lists_ok -eq 0 ]]; then
    apt_update || { cat "$log" >&2; echo "install-system-packages: apt-get update failed" >&2; exit 1; }
fi

install() {
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >>"$log" 2>&1
}

if ! install; then
    # stale lists give 404s for superseded versions: refresh once and retry
    if [[ $lists_ok -eq 1 ]] && apt_update && install; then
        :
    else
        cat "$log" >&2
        echo "install-system-packages: apt-get install failed: ${missing[*]}" >&2
        exit 1
    fi
fi

still=()
for pkg in "${missing[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || still+=("$pkg")
done
if [[ ${#still[@]} -gt 0 ]]; then
    cat "$log" >&2
    echo "install-system-packages: still missing: ${still[*]}" >&2
    exit 1
fi
echo "install-system-packages: installed ${missing[*]}"
