"""Run rendered Kubernetes pod specs under podman the way a kubelet would (for make deploy-smoke).

What is translated, per container (one container per pod; init containers and sidecars are refused):
image (``--pull never``), command/args (``$(VAR)`` expanded like the kubelet), env and envFrom from the
rendered ConfigMaps and Secrets (secretKeyRef/configMapKeyRef/fieldRef, ``$(VAR)`` references), volumes at
their mount paths (emptyDir: a 0777 host folder or a tmpfs for ``medium: Memory``, as the kubelet creates
them; PVCs and volumeClaimTemplates: a host folder group-owned by fsGroup with setgid; ConfigMap and
Secret volumes: read-only files with their defaultMode), the security context (runAsUser/runAsGroup,
fsGroup and supplementalGroups as extra groups, runAsNonRoot checked, readOnlyRootFilesystem without
podman's extra tmpfs mounts, capabilities, allowPrivilegeEscalation, seccomp), hostname, restart policy,
termination grace period; then startup, liveness and readiness probes (httpGet and tcpSocket from the
host to the pod address, exec inside the container) with their periods and thresholds.

Services: a headless Service's name resolves to its pods (network aliases); a ClusterIP Service gets a
forwarder container (scripts/deploy_smoke/forwarder.py) holding the Service's DNS names and mapping each
Service port to the pod's target port, as kube-proxy would. Not emulated: resource limits, NetworkPolicies,
scheduling (affinity, tolerations, topology), HPAs and PDBs, service-account tokens (every pod here sets
automountServiceAccountToken: false).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL = "dicomlab-smoke"
"""Every container the smoke creates carries this label, so cleanup can find exactly them."""


class SmokeError(Exception):
    """A workload did not behave as a kubelet would require (the message says which and why)."""


def podman(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float | None = None,
           capture: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=capture, text=True, check=False, env=env,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise SmokeError(f"podman {args[0]} {args[1] if len(args) > 1 else ''} failed: {result.stderr.strip()[-800:]}")
    return result


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, ``$$`` escapes, the rest stays."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))
    return _VAR.sub(sub, text)


@dataclass
class Pod:
    """One pod we started: the container name, its IP on the network and the spec it came from."""

    name: str
    kind: str
    spec: dict[str, Any]
    labels: dict[str, str]
    container: dict[str, Any]
    restart: str
    ip: str = ""

    @property
    def ctr(self) -> str:
        return self.name

    def port(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        for declared in self.container.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise SmokeError(f"{self.name}: no container port named {port!r}")


@dataclass
class Cluster:
    """The rendered objects of one release, run on one podman network."""

    objects: list[dict[str, Any]]
    namespace: str
    network: str
    workdir: Path
    pod_env: Callable[[Pod], dict[str, str]] = lambda pod: {}
    """Extra environment injected into a pod (what an admission webhook such as EKS Pod Identity adds)."""
    pods: dict[str, Pod] = field(default_factory=dict)
    log: Callable[[str], None] = print

    # ------------------------------------------------------------------------------------ objects
    def find(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise SmokeError(f"{kind}/{name} is referenced but not rendered")

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.find("Secret", name)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data

    def configmap_data(self, name: str) -> dict[str, str]:
        return dict(self.find("ConfigMap", name).get("data") or {})

    # ---------------------------------------------------------------------------------- env
    def resolve_env(self, pod: Pod) -> dict[str, str]:
        container = pod.container
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.configmap_data(source["configMapRef"]["name"])
            else:
                data = self.secret_data(source["secretRef"]["name"])
            env.update({prefix + k: v for k, v in data.items()})
        for entry in container.get("env", []):
            name = entry["name"]
            if "value" in entry:
                env[name] = expand(str(entry["value"]), env)
                continue
            ref = entry.get("valueFrom", {})
            if "secretKeyRef" in ref:
                key_ref = ref["secretKeyRef"]
                data = self.secret_data(key_ref["name"])
            elif "configMapKeyRef" in ref:
                key_ref = ref["configMapKeyRef"]
                data = self.configmap_data(key_ref["name"])
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                fields = {"metadata.name": pod.name, "metadata.namespace": self.namespace,
                          "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default")}
                if path not in fields:
                    raise SmokeError(f"{pod.name}: env {name}: fieldRef {path} is not emulated")
                env[name] = fields[path]
                continue
            else:
                raise SmokeError(f"{pod.name}: env {name}: unsupported valueFrom {sorted(ref)}")
            if key_ref["key"] not in data:
                raise SmokeError(f"{pod.name}: env {name}: key {key_ref['key']!r} missing in {key_ref['name']}")
            env[name] = data[key_ref["key"]]
        return env

    # ------------------------------------------------------------------------------ volumes
    def _host_dir(self, pod: Pod, volume: str) -> Path:
        path = self.workdir / "volumes" / pod.name / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def volume_args(self, pod: Pod) -> list[str]:
        security = pod.spec.get("securityContext") or {}
        fs_group = security.get("fsGroup")
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in pod.spec.get("_volumeClaimTemplates", [])}
        args: list[str] = []
        for mount in pod.container.get("volumeMounts", []):
            name, path = mount["name"], mount["mountPath"]
            readonly = ",ro" if mount.get("readOnly") else ""
            volume = volumes.get(name)
            if volume is None and name in claims:
                volume = {"name": name, "persistentVolumeClaim": {"claimName": f"{name}-{pod.name}"}}
            if volume is None:
                raise SmokeError(f"{pod.name}: volumeMount {name} has no volume")
            if "emptyDir" in volume:
                spec = volume["emptyDir"] or {}
                if spec.get("medium") == "Memory":
                    if path == "/dev/shm":  # noqa: S108 - the pod's shared memory, not a temp file
                        args += ["--shm-size", _bytes(spec.get("sizeLimit", "64Mi"))]
                        continue
                    # Like the kubelet: a tmpfs mounted on the node for the pod and bind-mounted into the
                    # container, so it outlives container restarts (a podman tmpfs would not).
                    host = self._host_dir(pod, name)
                    if not os.path.ismount(host):
                        size = f",size={_bytes(spec['sizeLimit'])}" if spec.get("sizeLimit") else ""
                        subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0777{size}", "tmpfs", str(host)],
                                       check=True, capture_output=True)
                    args += ["--mount", f"type=bind,source={host},destination={path}{readonly}"]
                    continue
                host = self._host_dir(pod, name)
                host.chmod(0o777)  # the kubelet creates emptyDir folders world-writable
                args += ["--mount", f"type=bind,source={host},destination={path}{readonly}"]
            elif "persistentVolumeClaim" in volume:
                host = self.workdir / "pvc" / volume["persistentVolumeClaim"]["claimName"]
                host.mkdir(parents=True, exist_ok=True)
                if fs_group is not None:  # fsGroup: group ownership plus setgid, group-writable
                    os.chown(host, 0, int(fs_group))
                    host.chmod(0o2775)
                args += ["--mount", f"type=bind,source={host},destination={path}{readonly}"]
            elif "configMap" in volume or "secret" in volume:
                if "configMap" in volume:
                    source = volume["configMap"]
                    data = self.configmap_data(source["name"])
                else:
                    source = volume["secret"]
                    data = self.secret_data(source["secretName"])
                mode = int(source.get("defaultMode", 0o644))
                host = self._host_dir(pod, name)
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = host / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                    target.chmod(int(item.get("mode", mode)))
                    if fs_group is not None:
                        os.chown(target, 0, int(fs_group))
                args += ["--mount", f"type=bind,source={host},destination={path},ro"]  # always read-only
            else:
                raise SmokeError(f"{pod.name}: volume {name} of type {sorted(volume)} is not emulated")
        return args

    # ------------------------------------------------------------------------------ security
    def security_args(self, pod: Pod, image_user: str) -> list[str]:
        pod_sc = pod.spec.get("securityContext") or {}
        ctr_sc = pod.container.get("securityContext") or {}

        def pick(key: str) -> Any:
            return ctr_sc.get(key, pod_sc.get(key))

        args: list[str] = []
        uid, gid = pick("runAsUser"), pick("runAsGroup")
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        effective = str(uid) if uid is not None else image_user.split(":")[0]
        if pick("runAsNonRoot"):
            if not effective.isdigit():
                raise SmokeError(f"{pod.name}: runAsNonRoot with a non-numeric image user {effective!r}: "
                                 "the kubelet refuses to start it")
            if int(effective) == 0:
                raise SmokeError(f"{pod.name}: runAsNonRoot but the container would run as root")
        for group in [pod_sc.get("fsGroup"), *pod_sc.get("supplementalGroups", [])]:
            if group is not None:
                args += ["--group-add", str(group)]
        if ctr_sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        capabilities = ctr_sc.get("capabilities") or {}
        for cap in capabilities.get("drop", []):
            args += ["--cap-drop", cap]
        for cap in capabilities.get("add", []):
            args += ["--cap-add", cap]
        if ctr_sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if ctr_sc.get("privileged"):
            raise SmokeError(f"{pod.name}: privileged containers are not run by the smoke")
        seccomp = (pick("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        return args

    # ---------------------------------------------------------------------------------- start
    def start(self, workload: dict[str, Any], *, name: str | None = None) -> Pod:
        kind = workload["kind"]
        template = workload if kind == "Pod" else workload["spec"]["template"]
        spec = dict(template["spec"])
        if kind == "StatefulSet":
            spec["_volumeClaimTemplates"] = workload["spec"].get("volumeClaimTemplates", [])
        if spec.get("initContainers") or len(spec["containers"]) != 1:
            raise SmokeError(f"{kind}/{workload['metadata']['name']}: only single-container pods are emulated")
        pname = name or pod_name(workload)
        restart = spec.get("restartPolicy", "Always")
        pod = Pod(pname, kind, spec, dict(template["metadata"].get("labels", {})), spec["containers"][0], restart)
        container = pod.container
        image = container["image"]
        if container.get("imagePullPolicy") != "Never" and podman("image", "exists", image, check=False).returncode:
            raise SmokeError(f"{pname}: image {image} is not here and nothing can be pulled")
        image_user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()

        env = self.resolve_env(pod)
        env.update(self.pod_env(pod))
        args = ["run", "-d", "--name", pod.ctr, "--hostname", pname, "--network", self.network,
                "--label", f"{LABEL}=1", "--pull", "never", "--log-driver", "k8s-file",
                "--no-healthcheck",  # the kubelet ignores an image's HEALTHCHECK: probes are the spec's
                "--stop-timeout", str(spec.get("terminationGracePeriodSeconds", 30))]
        args += ["--restart", {"Always": "always", "OnFailure": "on-failure"}.get(restart, "no")]
        for alias in self.headless_aliases(pod):
            args += ["--network-alias", alias]
        args += self.security_args(pod, image_user)
        args += self.volume_args(pod)
        for key in env:
            args += ["-e", key]  # the values travel in podman's environment, never on a command line
        command = [expand(c, env) for c in container.get("command", [])]
        cmd_args = [expand(a, env) for a in container.get("args", [])]
        if command:
            args += ["--entrypoint", json.dumps(command)]
        args += [image]
        if command and not cmd_args:
            pass  # Kubernetes: a command without args drops the image's CMD; --entrypoint does the same
        args += cmd_args
        self.log(f"  start {kind.lower()} {pname}: {image} {shlex.join(command + cmd_args)[:160]}")
        podman(*args, env={**os.environ, **env})
        pod.ip = self.ip(pod)
        self.pods[pname] = pod
        return pod

    def ip(self, pod: Pod) -> str:
        for _ in range(50):
            out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", pod.ctr).stdout
            address = (json.loads(out) or {}).get(self.network, {}).get("IPAddress", "")
            if address:
                return str(address)
            time.sleep(0.2)
        raise SmokeError(f"{pod.name}: no address on {self.network} (state: {self.state(pod)})")

    def headless_aliases(self, pod: Pod) -> list[str]:
        aliases = []
        for svc in self.services():
            selector = svc["spec"].get("selector") or {}
            if svc["spec"].get("clusterIP") == "None" and selector and _matches(selector, pod.labels):
                aliases += _dns_names(svc["metadata"]["name"], self.namespace)
        return aliases

    def services(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == "Service"]

    def start_services(self, image: str, forwarder: Path, workloads: list[dict[str, Any]]) -> None:
        """kube-proxy's part: one forwarder per ClusterIP Service, holding its DNS names. Started before the
        pods, as Services exist before their endpoints; a connection to a pod not listening yet is refused."""
        workloads = [{"pod": pod_name(w), "labels": _template(w)["metadata"].get("labels", {}),
                      "container": _template(w)["spec"]["containers"][0]} for w in workloads]
        for svc in self.services():
            spec = svc["spec"]
            selector = spec.get("selector") or {}
            if spec.get("clusterIP") == "None" or not selector:
                continue
            targets = [w for w in workloads if _matches(selector, w["labels"])]
            if not targets:
                self.log(f"  service {svc['metadata']['name']}: no pods selected (skipped)")
                continue
            target = Pod(targets[0]["pod"], "", {}, targets[0]["labels"], targets[0]["container"], "")
            mapping = [f"{p['port']}={target.ctr}:{target.port(p.get('targetPort', p['port']))}"
                       for p in spec["ports"]]
            name = f"svc-{svc['metadata']['name']}"
            args = ["run", "-d", "--name", name, "--network", self.network, "--label", f"{LABEL}=1",
                    "--pull", "never", "--user", "65534:65534", "--read-only", "--cap-drop", "ALL",
                    "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",  # Service ports below 1024
                    "--security-opt", "no-new-privileges", "--restart", "always",
                    "--mount", f"type=bind,source={forwarder},destination=/forwarder.py,ro"]
            for alias in _dns_names(svc["metadata"]["name"], self.namespace):
                args += ["--network-alias", alias]
            podman(*args, image, "python3", "/forwarder.py", *mapping)
            self.log(f"  service {svc['metadata']['name']}: {' '.join(mapping)}")

    def service_address(self, name: str, port: int) -> str:
        """host:port of a Service as the host (the smoke's client) reaches its forwarder."""
        out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", f"svc-{name}").stdout
        return f"{json.loads(out)[self.network]['IPAddress']}:{port}"

    # ----------------------------------------------------------------------------------- state
    def state(self, pod: Pod) -> dict[str, Any]:
        out = podman("inspect", "--format", "{{json .State}}|{{.RestartCount}}", pod.ctr, check=False).stdout.strip()
        if not out:
            return {"Status": "missing", "restarts": 0}
        state_json, restarts = out.rsplit("|", 1)
        state: dict[str, Any] = json.loads(state_json)
        state["restarts"] = int(restarts or 0)
        return state

    def logs(self, pod: Pod, tail: int = 40) -> str:
        result = podman("logs", "--tail", str(tail), pod.ctr, check=False)
        return (result.stdout + result.stderr).strip()

    # ---------------------------------------------------------------------------------- probes
    def probe_once(self, pod: Pod, probe: dict[str, Any]) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            http = probe["httpGet"]
            scheme = http.get("scheme", "HTTP").lower()
            url = f"{scheme}://{pod.ip}:{pod.port(http['port'])}{http.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in http.get("httpHeaders", [])}
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) to the pod only
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
                    return 200 <= response.status < 400, f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                return False, f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                return False, type(exc).__name__
        if "tcpSocket" in probe:
            try:
                with socket.create_connection((pod.ip, pod.port(probe["tcpSocket"]["port"])), timeout=timeout):
                    return True, "connected"
            except OSError as exc:
                return False, type(exc).__name__
        if "exec" in probe:
            try:
                result = podman("exec", pod.ctr, *probe["exec"]["command"], check=False, timeout=timeout + 5)
            except subprocess.TimeoutExpired:
                return False, "timeout"
            return result.returncode == 0, f"exit {result.returncode}"
        raise SmokeError(f"{pod.name}: probe kind {sorted(probe)} is not emulated")

    def wait_probe(self, pod: Pod, kind: str, *, budget: float | None = None) -> None:
        """Run one probe like the kubelet: initial delay, period, failure threshold (or ``budget`` seconds)."""
        probe = pod.container.get(f"{kind}Probe")
        if not probe:
            return
        period = float(probe.get("periodSeconds", 10))
        threshold = int(probe.get("failureThreshold", 3))
        deadline = time.monotonic() + (budget if budget is not None else period * threshold
                                       + float(probe.get("initialDelaySeconds", 0)))
        time.sleep(float(probe.get("initialDelaySeconds", 0)))
        last = ""
        while True:
            state = self.state(pod)
            if pod.restart == "Always" and state.get("restarts", 0) > 10:
                raise SmokeError(f"{pod.name}: crash-looping ({state.get('restarts')} restarts, last exit "
                                 f"{state.get('ExitCode')}) before its {kind} probe passed:\n{self.logs(pod)}")
            ok, last = self.probe_once(pod, probe)
            if ok:
                self.log(f"  {pod.name}: {kind} probe passed ({last}; restarts so far {state.get('restarts', 0)})")
                return
            if time.monotonic() > deadline:
                raise SmokeError(f"{pod.name}: {kind} probe failed ({last}); state {state.get('Status')} "
                                 f"restarts {state.get('restarts', 0)}:\n{self.logs(pod)}")
            time.sleep(period)

    def wait_ready(self, pod: Pod, *, readiness_budget: float = 120) -> None:
        self.wait_probe(pod, "startup")
        self.wait_probe(pod, "liveness")
        self.wait_probe(pod, "readiness", budget=readiness_budget)

    def wait_completed(self, pod: Pod, timeout: float) -> int:
        """Wait for a Job's or Pod's container to finish; its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(pod)
            if state.get("Status") in ("exited", "stopped"):
                return int(state.get("ExitCode", -1))
            time.sleep(2)
        raise SmokeError(f"{pod.name}: still running after {timeout:.0f} s:\n{self.logs(pod)}")


def pod_name(workload: dict[str, Any]) -> str:
    """The one pod a workload gets here: <statefulset>-0, <deployment>-pod, a Pod's or Job's own name."""
    base = str(workload["metadata"]["name"])
    return {"StatefulSet": f"{base}-0", "Deployment": f"{base}-pod"}.get(workload["kind"], base)


def _template(workload: dict[str, Any]) -> dict[str, Any]:
    return workload if workload["kind"] == "Pod" else dict(workload["spec"]["template"])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _dns_names(name: str, namespace: str) -> list[str]:
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}


def _bytes(quantity: str) -> str:
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    if not match:
        raise SmokeError(f"quantity {quantity!r} is not understood")
    return str(int(match.group(1)) * _UNITS.get(match.group(2) or "", 1))


def cleanup(network: str, workdir: Path, log: Callable[[str], None] = print) -> None:
    """Remove every container the smoke created (by label), its network and its host folders."""
    names = podman("ps", "-a", "--filter", f"label={LABEL}=1", "--format", "{{.Names}}", check=False).stdout.split()
    if names:
        podman("rm", "-f", "-t", "5", *names, check=False)
        log(f"removed {len(names)} containers")
    podman("network", "rm", "-f", network, check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{workdir}/")), reverse=True):
        subprocess.run(["umount", mount], check=False, capture_output=True)
    shutil.rmtree(workdir, ignore_errors=True)


def running(names: Iterable[str]) -> list[str]:
    out = podman("ps", "--filter", f"label={LABEL}=1", "--format", "{{.Names}}", check=False).stdout.split()
    wanted = set(names)
    return [n for n in out if n in wanted]
