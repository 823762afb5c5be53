"""Extra Swarm nodes on this one machine, for the tests (../shared/ENVIRONMENT.md, "Docker Swarm on
one machine").

A node is a second Docker engine on the host, in the host's network (its own loopback address
127.0.0.N for the swarm, its own bridges lgbrN and lggwN, never docker0) and in a private mount
namespace where /run is its own (its socket, containerd and exec root), its data root in a volume.
It is started from a helper container of the main engine (host pid and network, the capabilities
a Docker engine needs; the machine lacks CAP_SYS_RESOURCE, so not --privileged) that enters the
host's mount namespace: everything the node runs, its containers included (its cgroup parent is
the helper's), lives in the helper's cgroup. Killing the helper kills the node at once, as a
machine's death would; removing it leaves no process, mount or cgroup behind. The image reaches
the node with `docker save | docker load`. The test that makes nodes removes them: helper,
swarm node entry, data-root volume, bridges.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

LABEL = "labgrade.test-node"
# the capabilities of a Docker engine: all of the machine's bounding set (which lacks SYS_RESOURCE)
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE",
        "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ"]
# Run by the helper in the host's mount namespace (entered through the main engine's process:
# pid 1 of these machines refuses it). $LG_LOAD: the image to copy from the main engine.
NODE_SCRIPT = r'''
set -eu
N=$LG_N; ROOT=$LG_ROOT; D="docker -H unix://$ROOT/run/docker.sock"
mkdir -p $ROOT/run $ROOT/data
ip link add lgbr$N type bridge 2>/dev/null || true
ip addr replace 10.213.$N.1/24 dev lgbr$N
ip link set lgbr$N up
CG=$(awk -F: '$2=="pids"{print $3}' /proc/self/cgroup)
unshare -m --propagation private sh -c "mount --bind $ROOT/run /run && exec dockerd --data-root $ROOT/data \
  --bridge lgbr$N --iptables=false --ip-masq=false --ip-forward=false --cgroup-parent $CG/node --log-level warn" \
  > $ROOT/dockerd.log 2>&1 &
for i in $(seq 1 150); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
$D info >/dev/null
echo "engine up"
docker save $LG_LOAD | $D load -q
[ "$LG_LOAD" = "$LG_TAG" ] || $D tag $LG_LOAD $LG_TAG
echo "image loaded"
# its own docker_gwbridge (bridge lggwN), made before joining, so it never takes the main engine's
$D network create --driver bridge --subnet 10.213.$((N+100)).0/24 --opt com.docker.network.bridge.name=lggw$N \
  --opt com.docker.network.bridge.enable_icc=false --opt com.docker.network.bridge.enable_ip_masquerade=false \
  docker_gwbridge >/dev/null
$D swarm join --token $LG_TOKEN --listen-addr 127.0.0.$N:2377 --advertise-addr 127.0.0.$N 127.0.0.1:2377
echo "node ready $($D info --format '{{.Swarm.NodeID}}')"
wait
'''
HOST_SH = 'exec nsenter -t "$(pgrep -o -x dockerd)" -m -- sh -c "$0"'


@dataclass
class Node:
    n: int
    helper: Any
    volume: Any
    node_id: str = ""

    @property
    def addr(self) -> str:
        return f"127.0.0.{self.n}"


def start(client: Any, n: int, image: str, *, load: str | None = None) -> Node:
    """Start node `n` (2..9) from the helper image `image`; it loads `load` (default `image`) from
    the main engine, tagged as `image`. Returns at once: `wait_ready` waits for it."""
    import docker

    token = client.swarm.attrs["JoinTokens"]["Worker"]
    vol = client.volumes.create(name=f"lgnode{n}", labels={LABEL: str(n)})
    helper = client.containers.run(
        image, ["sh", "-c", HOST_SH, NODE_SCRIPT], detach=True, name=f"lgnode{n}", user="0:0",
        pid_mode="host", network_mode="host", cap_add=CAPS, device_cgroup_rules=["a *:* rwm"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"], labels={LABEL: str(n)},
        environment={"LG_N": str(n), "LG_ROOT": vol.attrs["Mountpoint"], "LG_TOKEN": token,
                     "LG_LOAD": load or image, "LG_TAG": image},
        mounts=[docker.types.Mount("/node", vol.name, type="volume")])
    return Node(n, helper, vol)


def wait_ready(client: Any, node: Node, timeout: float = 300) -> None:
    """Until `node` is a ready member of the swarm (its id found by its address), or RuntimeError."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        node.helper.reload()
        if node.helper.status != "running":
            raise RuntimeError(f"node {node.n} stopped: {node.helper.logs(tail=30).decode(errors='replace')}")
        said = [ln.split()[2] for ln in node.helper.logs().decode(errors="replace").splitlines()
                if ln.startswith("node ready ") and len(ln.split()) == 3]
        if said:  # the manager sees every node of this machine at 127.0.0.1: the node says its id
            node.node_id = said[0]
            with contextlib.suppress(Exception):
                if client.api.inspect_node(node.node_id)["Status"]["State"] == "ready":
                    return
        time.sleep(1)
    raise RuntimeError(f"node {node.n} not ready after {timeout:.0f} s: {node.helper.logs(tail=30).decode()}")


def kill(node: Node) -> None:
    """The node dies: its engine and everything it ran, at once."""
    node.helper.kill()


def label(client: Any, node_id: str, labels: dict[str, str]) -> None:
    spec = client.api.inspect_node(node_id)
    client.api.update_node(node_id, spec["Version"]["Index"], {**spec["Spec"], "Labels": labels})


def remove(client: Any, node: Node, image: str) -> None:
    """Remove everything `node` was: its processes, its swarm entry, its data root, its bridges."""
    with contextlib.suppress(Exception):
        node.helper.remove(force=True)
    if node.node_id:
        with contextlib.suppress(Exception):
            client.api.remove_node(node.node_id, force=True)
    for _ in range(30):
        try:
            node.volume.remove(force=True)
            break
        except Exception as e:
            if "no such volume" in str(e).lower() or "not found" in str(e).lower():
                break
            time.sleep(1)
    client.containers.run(image, ["sh", "-c", HOST_SH, f"ip link del lgbr{node.n} 2>/dev/null; "
                                  f"ip link del lggw{node.n} 2>/dev/null; true"],
                          remove=True, user="0:0", pid_mode="host", network_mode="host",
                          cap_add=["SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE", "NET_ADMIN"],
                          security_opt=["seccomp=unconfined", "apparmor=unconfined"])


def leftovers(client: Any) -> list[str]:
    """What nodes of these tests left on the main engine and the host (empty: nothing)."""
    out = [f"helper {c.name}" for c in client.containers.list(all=True, ignore_removed=True, filters={"label": LABEL})]
    out += [f"volume {v.name}" for v in client.volumes.list(filters={"label": LABEL})]
    out += [f"swarm worker node {x['ID'][:12]}" for x in client.api.nodes() if not x.get("ManagerStatus")]
    return out
