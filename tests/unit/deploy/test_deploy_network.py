"""The NetworkPolicies of k8s/, evaluated offline against the intended matrix.

A small evaluator of the NetworkPolicy semantics (networking.k8s.io/v1): a connection from a
pod (or address) to a pod (or address) on a port is allowed when the source's egress allows
it (or no egress policy selects the source) and the destination's ingress allows it (or no
ingress policy selects the destination). Only pods in the ``serlens`` namespace have
policies here; other namespaces are open, as on a cluster without policies there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NAMESPACE = "serlens"
POD_CIDR = "10.244.0.0/16"  # where this test's pods live; addresses outside are not pods


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or, with ``ip`` alone, an address outside the cluster."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.1.1"

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], other: Endpoint) -> bool:
    """Whether one ``from``/``to`` entry covers ``other`` (policies live in NAMESPACE)."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(address in ipaddress.ip_network(c) for c in block.get("except", []))
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != NAMESPACE:
        return False
    return matches(peer.get("podSelector", {}), other.labels)


def port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    """Whether a rule's ports (a port, or a range up to ``endPort``) cover ``port``."""
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol
        and (p.get("port") is None or p["port"] <= port <= p.get("endPort", p["port"]))
        for p in ports
    )


def direction_allows(policies: list[dict[str, Any]], pod: Endpoint, other: Endpoint, port: int,
                     protocol: str, direction: str) -> bool:
    """Ingress (``other`` -> ``pod``) or egress (``pod`` -> ``other``) at ``pod``."""
    if not pod.is_pod or pod.namespace != NAMESPACE:
        return True
    kind, rules_key, peers_key = ("Ingress", "ingress", "from") if direction == "in" else ("Egress", "egress", "to")
    selecting = [p for p in policies if kind in p["policyTypes"] and matches(p["podSelector"], pod.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy.get(rules_key, []):
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(peer, other) for peer in peers)) and port_matches(
                rule.get("ports"), port, protocol
            ):
                return True
    return False


def allowed(policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int,
            protocol: str = "TCP") -> bool:
    return direction_allows(policies, source, target, port, protocol, "out") and direction_allows(
        policies, target, source, port, protocol, "in"
    )


def ray(component: str, node_type: str) -> dict[str, str]:
    return {"ray.io/node-type": node_type, "app.kubernetes.io/name": "serlens",
            "app.kubernetes.io/component": component}


HEAD = Endpoint("ray head", NAMESPACE, ray("ray-head", "head"))
WORKER = Endpoint("ray GPU worker (Embed, Predict)", NAMESPACE, ray("ray-worker", "worker"))
CPU_WORKER = Endpoint("ray CPU worker (the API's ingress, /train runs)", NAMESPACE, ray("ray-cpu-worker", "worker"))
STUDY_HEAD = Endpoint("RayJob head", NAMESPACE, ray("study-head", "head"))
STUDY_WORKER = Endpoint("RayJob worker", NAMESPACE, ray("study-worker", "worker"))
MLFLOW = Endpoint("mlflow", NAMESPACE, {"app.kubernetes.io/name": "mlflow"})
LOADER = Endpoint("data loader", NAMESPACE, {"app.kubernetes.io/name": "serlens",
                                             "app.kubernetes.io/component": "data-loader"})
STRANGER = Endpoint("another pod of the namespace", NAMESPACE, {"app": "debug"})
POSTGRES = Endpoint("PostgreSQL pod", NAMESPACE, {"app.kubernetes.io/name": "postgresql"})
OTHER_NAMESPACE = Endpoint("a pod of another namespace", "default", {"app": "curl"})
INGRESS = Endpoint("ingress controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
INGRESS_NS_OTHER = Endpoint("another pod of the ingress namespace", "ingress-nginx", {"app": "other"})
OPERATOR = Endpoint("KubeRay operator", "kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
OPERATOR_NS_OTHER = Endpoint("another pod of the operator's namespace", "kuberay-system", {"app": "other"})
DNS = Endpoint("cluster DNS", "kube-system", {"k8s-app": "kube-dns"})
METADATA = Endpoint("cloud metadata", ip="169.254.169.254")
INTERNET = Endpoint("the internet", ip="93.184.216.34")
API_SERVER = Endpoint("Kubernetes API server", ip="10.96.0.1")
MANAGED_DB = Endpoint("a managed PostgreSQL", ip="10.20.0.5")
POD_IDENTITY_AGENT = Endpoint("EKS Pod Identity agent", ip="169.254.170.23")

#: Every pod and address the checks below try, as a source and as a destination.
RAY_PODS = [HEAD, WORKER, CPU_WORKER, STUDY_HEAD, STUDY_WORKER]
PODS = [*RAY_PODS, MLFLOW, LOADER, STRANGER, POSTGRES, OTHER_NAMESPACE, INGRESS, INGRESS_NS_OTHER, OPERATOR,
        OPERATOR_NS_OTHER, DNS]
ADDRESSES = [METADATA, INTERNET, API_SERVER, MANAGED_DB, POD_IDENTITY_AGENT]

# (source, target, port, protocol, allowed)
MATRIX = [
    (INGRESS, WORKER, 8000, "TCP", True),
    (INGRESS, CPU_WORKER, 8000, "TCP", True),
    (INGRESS, HEAD, 8000, "TCP", True),
    (STRANGER, WORKER, 8000, "TCP", False),
    (MLFLOW, WORKER, 8000, "TCP", False),
    (OTHER_NAMESPACE, WORKER, 8000, "TCP", False),
    (OPERATOR, WORKER, 8000, "TCP", False),
    (INGRESS, HEAD, 8265, "TCP", False),
    (OPERATOR, HEAD, 8265, "TCP", True),
    (OPERATOR, STUDY_HEAD, 8265, "TCP", True),
    (STRANGER, HEAD, 8265, "TCP", False),
    (MLFLOW, HEAD, 8265, "TCP", False),
    (LOADER, HEAD, 8265, "TCP", False),
    (OTHER_NAMESPACE, HEAD, 8265, "TCP", False),
    (OPERATOR, HEAD, 6379, "TCP", False),
    (WORKER, HEAD, 6379, "TCP", True),
    (CPU_WORKER, HEAD, 6379, "TCP", True),
    # The API's replica (and any code a job runs) cannot submit Ray jobs: /train needs no 8265.
    (CPU_WORKER, HEAD, 8265, "TCP", False),
    (WORKER, HEAD, 8265, "TCP", False),
    (STUDY_WORKER, STUDY_HEAD, 8265, "TCP", False),
    (HEAD, WORKER, 10_002, "TCP", True),
    (CPU_WORKER, WORKER, 52_365, "TCP", True),
    (WORKER, CPU_WORKER, 8000, "TCP", False),
    (WORKER, MLFLOW, 5000, "TCP", True),
    (CPU_WORKER, MLFLOW, 5000, "TCP", True),
    (STUDY_HEAD, MLFLOW, 5000, "TCP", True),
    (STRANGER, MLFLOW, 5000, "TCP", False),
    (LOADER, MLFLOW, 5000, "TCP", False),
    (INGRESS, MLFLOW, 5000, "TCP", False),
    (WORKER, DNS, 53, "UDP", True),
    (MLFLOW, DNS, 53, "UDP", True),
    (LOADER, DNS, 53, "TCP", True),
    (WORKER, METADATA, 80, "TCP", False),
    (HEAD, METADATA, 80, "TCP", False),
    (HEAD, METADATA, 443, "TCP", False),
    (MLFLOW, METADATA, 80, "TCP", False),
    (WORKER, INTERNET, 443, "TCP", False),
    (MLFLOW, INTERNET, 443, "TCP", False),
    (MLFLOW, POSTGRES, 5432, "TCP", False),  # only with the mlflow/postgres component
    (LOADER, INTERNET, 443, "TCP", False),
    (WORKER, OTHER_NAMESPACE, 8080, "TCP", False),
    (HEAD, API_SERVER, 443, "TCP", True),  # the autoscaler
    (WORKER, API_SERVER, 443, "TCP", False),
    (STUDY_HEAD, API_SERVER, 443, "TCP", False),
]


@pytest.fixture(scope="module")
def policies(manifests: list[Any]) -> list[dict[str, Any]]:
    return [m.body["spec"] for m in manifests if m.kind == "NetworkPolicy"]


@pytest.mark.parametrize(
    ("source", "target", "port", "protocol", "expected"),
    MATRIX,
    ids=[f"{s.name}->{t.name}:{p}/{proto}" for s, t, p, proto, _ in MATRIX],
)
def test_the_intended_connection_matrix(policies, source, target, port, protocol, expected):
    assert allowed(policies, source, target, port, protocol) is expected


def test_the_evaluator_sees_an_open_namespace_as_open():
    # Without policies everything is allowed: the matrix above is the policies' doing.
    assert allowed([], STRANGER, HEAD, 8265) and allowed([], WORKER, METADATA, 80)
    deny_all = [{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}]
    assert not allowed(deny_all, INGRESS, WORKER, 8000) and not allowed(deny_all, WORKER, DNS, 53, "UDP")


def test_every_pod_of_the_namespace_is_covered_by_default_deny(policies):
    for direction in ("Ingress", "Egress"):
        assert any(p["podSelector"] == {} and p["policyTypes"] == [direction] and direction.lower() not in p
                   for p in policies), direction


def _reachable(policies: list[dict[str, Any]], port: int, target: Endpoint) -> set[str]:
    return {source.name for source in PODS if source is not target and allowed(policies, source, target, port)}


def test_only_the_operator_reaches_the_job_api(policies):
    for head in (HEAD, STUDY_HEAD):
        assert _reachable(policies, 8265, head) == {OPERATOR.name}, head.name


def test_only_the_ingress_controller_reaches_the_api_port(policies):
    for pod in (HEAD, WORKER, CPU_WORKER):
        assert _reachable(policies, 8000, pod) == {INGRESS.name}, pod.name


PROBES = [(53, "UDP"), (53, "TCP"), (80, "TCP"), (443, "TCP"), (5000, "TCP"), (5432, "TCP"), (6379, "TCP"),
          (8080, "TCP")]
#: Ray pods may open any port of any Ray pod (the rules that take connections narrow it).
RAY_PEERS = {("ray", port, protocol) for port, protocol in PROBES}

#: What each pod may open, and nothing else: (destination, port, protocol).
EGRESS: dict[str, set[tuple[str, int, str]]] = {
    MLFLOW.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP")},
    LOADER.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP")},
    STRANGER.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP")},
    CPU_WORKER.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP"), (MLFLOW.name, 5000, "TCP"), *RAY_PEERS},
    WORKER.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP"), (MLFLOW.name, 5000, "TCP"), *RAY_PEERS},
    STUDY_HEAD.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP"), (MLFLOW.name, 5000, "TCP"), *RAY_PEERS},
    # The autoscaler's API server has no labels: HTTPS to any address but link-local (the file
    # asks to narrow the range to the API server's address where it is known).
    HEAD.name: {(DNS.name, 53, "UDP"), (DNS.name, 53, "TCP"), (MLFLOW.name, 5000, "TCP"), *RAY_PEERS,
                *{(peer.name, 443, "TCP") for peer in PODS + ADDRESSES
                  if peer not in RAY_PODS and peer not in (METADATA, POD_IDENTITY_AGENT)}},
}


def _egress(policies: list[dict[str, Any]], source: Endpoint) -> set[tuple[str, int, str]]:
    """Where ``source`` may connect to, as far as its own egress rules go (Ray pods as one)."""
    found = set()
    for target in PODS + ADDRESSES:
        for port, protocol in PROBES:
            if target is not source and direction_allows(policies, source, target, port, protocol, "out"):
                found.add(("ray" if target in RAY_PODS else target.name, port, protocol))
    return found


@pytest.mark.parametrize("source", [pod for pod in PODS if pod.name in EGRESS], ids=lambda pod: pod.name)
def test_each_pod_may_open_only_dns_mlflow_and_its_own_peers(policies, source):
    assert _egress(policies, source) == EGRESS[source.name]


#: What an MLflow option adds to MLflow's egress, and nothing else (no other pod gains any).
OPTION_EGRESS: dict[str, set[tuple[str, int, str]]] = {
    # PostgreSQL's port anywhere but link-local: an in-cluster server or a managed one.
    "mlflow/postgres": {("ray" if peer in RAY_PODS else peer.name, 5432, "TCP")
                        for peer in PODS + ADDRESSES if peer not in (MLFLOW, METADATA, POD_IDENTITY_AGENT)},
    # HTTPS to public addresses only (the object store's endpoints), plus each cloud's identity agent.
    "mlflow/s3": {(INTERNET.name, 443, "TCP"), (POD_IDENTITY_AGENT.name, 80, "TCP")},
    "mlflow/gcs": {(INTERNET.name, 443, "TCP"), (METADATA.name, 80, "TCP")},
    "mlflow/azure": {(INTERNET.name, 443, "TCP")},
}


@pytest.mark.parametrize("option", list(OPTION_EGRESS))
def test_an_mlflow_option_opens_its_store_to_mlflow_alone(tmp_path, option):
    from tests.support.kustomize import build, with_components

    root = with_components(Path(__file__).resolve().parents[3] / "k8s", tmp_path / "k8s", [option])
    policies = [o["spec"] for o in build(root) if o["kind"] == "NetworkPolicy"]
    assert _egress(policies, MLFLOW) - EGRESS[MLFLOW.name] == OPTION_EGRESS[option]
    for pod in PODS:
        if pod is not MLFLOW and pod.name in EGRESS:
            assert _egress(policies, pod) == EGRESS[pod.name], pod.name
