"""The production stack's wiring, checked without Docker or a cluster (neither runs here).

The compose file is parsed; the Kubernetes manifests are rendered with `kubectl kustomize`
and validated against the Kubernetes schemas offline (kubernetes-validate). Then: every
environment name is a setting kb reads, the workers listen to the queues the tasks are
routed to, ports, volumes and secrets line up, every service is health-checked, and only
web is reachable from outside. Last, questions really spread over two model servers and
fail over when one stops.
"""

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "compose" / ".env.example"
K8S = ROOT / "compose" / "k8s"
KB_IMAGE = "kb"
KUBERNETES_VERSION = "1.32.0"  # the oldest release still supported when this was written


# --- what the code says ---------------------------------------------------------------


@functools.cache
def settings_names() -> frozenset[str]:
    """Every environment name server/settings.py reads (env_* calls, NAME_FILE for secrets,
    and the variables it sets for the libraries)."""
    tree = ast.parse((ROOT / "server" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if called.startswith("env_"):
            names.add(first.value)
            if called == "env_secret":
                names.add(f"{first.value}_FILE")
        elif called == "setdefault" and ast.unparse(func).startswith("os.environ"):
            names.add(first.value)
    return frozenset(names)


def routed_queues() -> set[str]:
    from django.conf import settings

    routes = settings.CELERY_TASK_ROUTES.values()
    return {settings.CELERY_TASK_DEFAULT_QUEUE} | {route["queue"] for route in routes}


def listened_queues(command: list[str]) -> set[str]:
    """The queues of a `celery worker` command line (-Q a,b or --queues=a,b)."""
    queues: set[str] = set()
    for i, word in enumerate(command):
        if word in ("-Q", "--queues"):
            queues.update(command[i + 1].split(","))
        elif word.startswith("--queues="):
            queues.update(word.split("=", 1)[1].split(","))
    return queues


# --- compose ---------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def kb_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if s["image"].split(":")[0] == KB_IMAGE}


def words(command: str | list[str]) -> list[str]:
    return command.split() if isinstance(command, str) else command


def long_running(service: dict[str, Any]) -> bool:
    return service.get("restart") != "no"


def test_every_environment_name_of_a_kb_service_is_a_setting():
    for name, service in kb_services().items():
        unknown = set(service["environment"]) - settings_names()
        assert not unknown, f"{name} sets {sorted(unknown)}, which server/settings.py never reads"


def test_the_workers_listen_to_every_routed_queue_and_only_those():
    workers = {n: s for n, s in kb_services().items() if "worker" in words(s["command"])}
    listened = {n: listened_queues(words(s["command"])) for n, s in workers.items()}
    assert listened == {
        "worker-ingest": {"ingest"},
        "worker-embed": {"embed"},
        "worker-evaluate": {"evaluate"},
    }
    assert set().union(*listened.values()) == routed_queues()


def test_the_embedded_worker_has_a_thread_for_every_routed_queue():
    from server.worker import QUEUES

    assert set(QUEUES) == routed_queues()


def test_the_reconcilers_never_wait_behind_an_evaluation_run():
    # On the evaluate queue, a run of hours (or a dead evaluation worker) would hold back
    # the task that finds the runs whose worker stopped.
    from django.conf import settings

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        task = str(entry["task"])
        route = settings.CELERY_TASK_ROUTES.get(task, {})
        assert route.get("queue", settings.CELERY_TASK_DEFAULT_QUEUE) == "ingest", task


def test_the_embedding_worker_holds_one_model_on_a_reserved_gpu():
    embed = services()["worker-embed"]
    assert "--concurrency 1" in embed["command"]
    assert embed["environment"]["KB_EMBEDDING_DEVICE"] == "cuda"
    (device,) = embed["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_the_ingest_worker_is_prefork_with_memory_and_time_limits():
    ingest = services()["worker-ingest"]
    assert "--pool prefork" in ingest["command"]
    for name in ("KB_WORKER_MAX_MEMORY_MB", "KB_PARSE_MEMORY_MB", "KB_TASK_TIME_LIMIT"):
        assert name in ingest["environment"]


def test_only_web_is_published_and_the_rest_has_no_route_out():
    published = {n for n, s in services().items() if s.get("ports") or s.get("network_mode")}
    assert published == {"web"}
    networks = compose()["networks"]
    for name, service in services().items():
        if name != "web":
            assert all(networks[net].get("internal") for net in service["networks"]), name


def test_every_long_running_service_is_health_checked_and_restarted():
    for name, service in services().items():
        if long_running(service):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
            assert service.get("restart") in ("always", "unless-stopped"), name


def test_every_secret_is_declared_and_every_secret_file_is_mounted():
    declared = set(compose()["secrets"])
    used: set[str] = set()
    for name, service in services().items():
        mounted = set(service.get("secrets", []))
        assert mounted <= declared, f"{name} mounts undeclared secrets {mounted - declared}"
        used |= mounted
        text = yaml.safe_dump({k: v for k, v in service.items() if k != "secrets"})
        for wanted in re.findall(r"/run/secrets/([a-z_]+)", text):
            assert wanted in mounted, f"{name} reads /run/secrets/{wanted} without mounting it"
    assert used == declared, f"declared but unused: {declared - used}"
    for path in (spec["file"] for spec in compose()["secrets"].values()):
        assert path.startswith("./secrets/")  # kept out of git (compose/.gitignore)


def test_every_volume_is_declared_and_used():
    declared = set(compose()["volumes"])
    used = set()
    for service in services().values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source
                used.add(source)
    assert used == declared


def test_kb_reaches_each_service_on_the_port_it_listens_on():
    env = services()["web"]["environment"]
    qdrant = urlsplit(env["QDRANT_URL"])
    assert qdrant.hostname == "qdrant" and qdrant.port == 6333
    urls = [urlsplit(url) for url in env["LLM_BASE_URL"].split(",")]
    assert {url.hostname for url in urls} == {"vllm", "vllm-2"}
    for url in urls:
        command = services()[url.hostname]["command"][0]
        assert f"--port {url.port}" in command
        assert "--served-model-name ${LLM_MODEL}" in command
    assert env["LLM_MODEL"].startswith("${LLM_MODEL")


def test_the_models_run_offline_from_a_volume_on_their_own_gpus():
    gpus = set()
    for name in ("vllm", "vllm-2"):
        service = services()[name]
        assert service["environment"]["HF_HUB_OFFLINE"] == "1"
        assert service["environment"]["VLLM_NO_USAGE_STATS"] == "1"
        assert "--max-model-len ${VLLM_MAX_MODEL_LEN" in service["command"][0]
        assert "vllm-models:/models:ro" in service["volumes"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        gpus.add(device["device_ids"][0])
    assert len(gpus) == 2
    assert compose()["volumes"]["vllm-models"]["external"] is True


def test_env_example_names_every_variable_the_compose_file_uses():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used == example


def example_env() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolated(value: str) -> str:
    """A compose value as .env.example would make it (${NAME}, ${NAME:-x}, ${NAME:?x})."""
    return re.sub(r"\$\{([A-Z0-9_]+)[^}]*\}", lambda m: example_env()[m.group(1)], value)


def test_web_answers_its_own_health_check_under_the_stacks_allowed_hosts(client, settings):
    web = services()["web"]
    settings.ALLOWED_HOSTS = interpolated(web["environment"]["ALLOWED_HOSTS"]).split(",")
    found = re.search(r"http://[^'\"]+", " ".join(web["healthcheck"]["test"]))
    assert found, "the web health check asks no URL"
    url = urlsplit(found.group())
    assert client.get(url.path, HTTP_HOST=url.netloc).status_code == 200


# --- Kubernetes ------------------------------------------------------------------------


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Kubernetes manifests cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered() if doc["kind"] in kinds]


def named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment", "StatefulSet", "Job")


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def kb_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (w["metadata"]["name"], c)
        for w in workloads()
        for c in pod(w)["containers"]
        if c["image"].split(":")[0].rsplit("/", 1)[-1] == KB_IMAGE
    ]


def configmap() -> dict[str, str]:
    return named("ConfigMap", "kb-config")["data"]


def test_the_manifests_pass_the_kubernetes_schemas():
    import kubernetes_validate

    for doc in rendered():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_environment_name_in_the_manifests_is_a_setting():
    names = set(configmap())
    for _, container in kb_containers():
        names |= {env["name"] for env in container.get("env", [])}
        assert {"configMapRef": {"name": "kb-config"}} in container["envFrom"]
    assert not names - settings_names(), sorted(names - settings_names())


def test_the_manifests_run_the_same_services_as_compose():
    deployments = {d["metadata"]["name"]: pod(d)["containers"][0] for d in of_kind("Deployment")}
    assert set(deployments) == {"web", "worker-ingest", "worker-embed", "worker-evaluate", "beat"}
    statefulsets = {s["metadata"]["name"]: s["spec"]["replicas"] for s in of_kind("StatefulSet")}
    assert statefulsets == {"postgres": 1, "redis": 1, "qdrant": 3, "llm": 2}
    queues = {
        name: listened_queues(container["command"])
        for name, container in deployments.items()
        if container["command"][:4] == ["celery", "-A", "server", "worker"]
    }
    assert queues == {
        "worker-ingest": {"ingest"},
        "worker-embed": {"embed"},
        "worker-evaluate": {"evaluate"},
    }
    assert set().union(*queues.values()) == routed_queues()


def test_gpu_workloads_request_gpus_and_others_do_not():
    wanting = set()
    for workload in workloads():
        for container in pod(workload)["containers"]:
            limits = container["resources"]["limits"]
            assert "memory" in limits, f"{workload['metadata']['name']} has no memory limit"
            if "nvidia.com/gpu" in limits:
                wanting.add(workload["metadata"]["name"])
    assert wanting == {"worker-embed", "llm"}


def test_every_long_running_container_has_probes():
    for workload in of_kind("Deployment", "StatefulSet"):
        for container in pod(workload)["containers"]:
            assert "livenessProbe" in container, workload["metadata"]["name"]
            if container.get("ports"):
                assert "readinessProbe" in container, workload["metadata"]["name"]


def test_only_web_is_reachable_from_outside():
    exposed = [s for s in of_kind("Service") if s["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert not exposed
    backends = {
        path["backend"]["service"]["name"]
        for ingress in of_kind("Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"web"}
    deny = named("NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_qdrants_peer_port_is_open_to_the_peers_alone():
    assert 6335 not in {p["port"] for p in named("Service", "qdrant")["spec"]["ports"]}
    peers = {"app.kubernetes.io/name": "qdrant"}
    for policy in of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if 6335 in ports or not ports:
                sources = [f.get("podSelector", {}).get("matchLabels") for f in rule["from"]]
                assert sources == [peers], f"{policy['metadata']['name']} opens 6335 wider"


def test_services_select_pods_that_listen_on_their_ports():
    pods = {
        w["metadata"]["name"]: (w["spec"]["template"]["metadata"]["labels"], pod(w))
        for w in of_kind("Deployment", "StatefulSet")
    }
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [spec for labels, spec in pods.values() if selector.items() <= labels.items()]
        assert matches, f"service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in matches:
                listening = {
                    value
                    for container in spec["containers"]
                    for p in container.get("ports", [])
                    for value in (p["containerPort"], p.get("name"))
                }
                assert target in listening, f"{service['metadata']['name']}:{target}"


def test_kb_names_each_model_replica_and_the_model_they_serve():
    llm = named("StatefulSet", "llm")
    urls = [urlsplit(url) for url in configmap()["LLM_BASE_URL"].split(",")]
    expected = {f"llm-{i}.{llm['spec']['serviceName']}" for i in range(llm["spec"]["replicas"])}
    assert {url.hostname for url in urls} == expected
    args = pod(llm)["containers"][0]["args"]
    assert f"--served-model-name={configmap()['LLM_MODEL']}" in args
    assert {f"--port={url.port}" for url in urls} <= set(args)
    qdrant = urlsplit(configmap()["QDRANT_URL"])
    service = named("Service", str(qdrant.hostname))
    assert qdrant.port in {p["port"] for p in service["spec"]["ports"]}


def test_volumes_and_secrets_resolve():
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    secret_keys = set(compose()["secrets"])  # one set of names for compose and Kubernetes
    for workload in workloads():
        spec = pod(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim_templates = workload["spec"].get("volumeClaimTemplates", [])
        templates = {t["metadata"]["name"] for t in claim_templates}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | templates, mount["name"]
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref["key"] in secret_keys, ref
        for volume in volumes.values():
            if claim := volume.get("persistentVolumeClaim"):
                assert claim["claimName"] in claims
            for item in volume.get("secret", {}).get("items", []):
                assert item["key"] in secret_keys
    for name, value in configmap().items():
        if name.endswith("_FILE"):
            assert value.removeprefix("/run/secrets/") in secret_keys, name


def test_web_answers_its_probes_under_the_allowed_hosts(client, settings):
    settings.ALLOWED_HOSTS = configmap()["ALLOWED_HOSTS"].split(",")
    (web,) = pod(named("Deployment", "web"))["containers"]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = web[kind]["httpGet"]
        headers = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}
        host = headers.get("Host", "10.0.0.7")  # without one, the kubelet sends the pod's IP
        assert client.get(probe["path"], HTTP_HOST=host).status_code == 200, kind


# --- settings the stack relies on ------------------------------------------------------


def test_the_database_and_broker_urls_are_read_from_secret_files(tmp_path):
    (tmp_path / "database_url").write_text("postgres://kb:s3cret@postgres:5432/kb\n")
    (tmp_path / "redis_url").write_text("redis://:s3cret@redis:6379/0\n")
    env = {
        **os.environ,
        "KB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL_FILE": str(tmp_path / "database_url"),
        "REDIS_URL_FILE": str(tmp_path / "redis_url"),
    }
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['PASSWORD'], s.CELERY_BROKER_URL)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.stdout.split() == ["s3cret", "redis://:s3cret@redis:6379/0"], out.stderr


def test_the_stacks_identity_settings_start_kb_with_sso_and_scim_off_until_filled(tmp_path):
    # compose/README.md makes both secret files empty when neither is used.
    (tmp_path / "kb_scim_token").write_text("")
    (tmp_path / "oidc_client_secret").write_text("")
    kb_env = {
        name: interpolated(str(value))
        for name, value in services()["web"]["environment"].items()
        if name.startswith(("OIDC_", "KB_SCIM", "KB_PASSWORD", "KB_BREAK", "KB_BUDGET"))
    }
    kb_env = {k: v.replace("/run/secrets", str(tmp_path)) for k, v in kb_env.items()}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(repr(s.OIDC_ISSUER), repr(s.KB_SCIM_TOKEN), s.KB_PASSWORD_LOGIN)"
    )

    def start(**extra: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KB_DATA_DIR": str(tmp_path / "data"), **kb_env, **extra}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
        )

    assert start().stdout.split() == ["''", "''", "True"], start().stderr
    (tmp_path / "kb_scim_token").write_text("short\n")
    assert "KB_SCIM_TOKEN must be at least 32 characters" in start().stderr
    (tmp_path / "kb_scim_token").write_text("t" * 40 + "\n")
    assert start().stdout.split()[1] == repr("t" * 40)


# --- the Qdrant recipe in compose/README.md ---------------------------------------------


def test_the_readmes_qdrant_collection_is_one_kb_fills_and_searches(tmp_path):
    from qdrant_client import QdrantClient

    from ingest import embedder
    from ingest.sparse import encode_document, encode_query
    from ingest.vectors.base import INDEXED_FIELDS, Point, Scope, point_payload
    from ingest.vectors.server import LAYOUT, ServerStore

    readme = (ROOT / "compose" / "README.md").read_text()
    found = re.search(r"```python\n(from qdrant_client import models\n.*?)```", readme, re.S)
    assert found, "compose/README.md has no collection recipe"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    recipe: dict[str, Any] = {"client": client}
    exec(found.group(1), recipe)  # noqa: S102 (our own README)
    # Made with kb's layout: kb uses it as it is, with nothing to upgrade.
    assert client.get_collection(recipe["COLLECTION"]).config.metadata == LAYOUT
    client.close()
    assert recipe["COLLECTION"] == f"kb-{embedder.model_name()}".lower()
    assert recipe["INDEXED"] == INDEXED_FIELDS

    store = ServerStore.connect(
        path=str(tmp_path / "qdrant"),
        collection=recipe["COLLECTION"],
        dimensions=embedder.dimensions(),
    )
    text = "Every employee receives twenty-eight days of paid holiday."
    payload = point_payload(
        collection_id=7, document_id=1, version=1, chunk_id=1, page=1, content_type="text/plain"
    )
    store.upsert(
        [
            Point(
                id="00000000-0000-0000-0000-000000000001",
                dense=[1.0] + [0.0] * (embedder.dimensions() - 1),
                sparse=encode_document(text),
                payload={**payload, "live": 1},
            )
        ]
    )
    hits = store.search(
        dense=None, sparse=encode_query("paid holiday"), scope=Scope([7]), limit=3, mode="sparse"
    )
    assert [hit.payload["chunk_id"] for hit in hits] == [1]
    store.close()


# --- the model servers ------------------------------------------------------------------


class _Counting:
    """The real client of one endpoint, counting the questions sent to it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.url = client.url
        self.questions = 0

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.questions += 1
        return self.client.stream(*args, **kwargs)

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.complete(*args, **kwargs)  # a follow-up's rewrite, not counted


def test_questions_spread_over_two_model_servers_and_fail_over(
    docs, bob, local_llm, llm_at, settings
):
    from retrieval import llm
    from retrieval.local_llm import LocalLlm
    from tests.conftest import free_port, logged_in

    settings.KB_LLM_MAX_TOKENS = 16  # the answers' length is not what is tested
    second = LocalLlm(free_port())
    try:
        llm_at(local_llm, second.url)
        endpoints = llm.pool_for(None).endpoints
        counts = [_Counting(endpoint.client) for endpoint in endpoints]
        for endpoint, counting in zip(endpoints, counts, strict=True):
            endpoint.client = counting
        client = logged_in(bob)

        def ask() -> int:
            body = {"question": "How many days of paid holiday?"}
            return client.post("/api/v1/ask", body, content_type="application/json").status_code

        assert [ask() for _ in range(4)] == [200] * 4
        assert [c.questions for c in counts] == [2, 2]

        second.stop()
        assert [ask() for _ in range(4)] == [200] * 4
        assert [e.down_until > 0 for e in endpoints] == [False, True]
        # The stopped one was tried once, then skipped; the first answered every question.
        assert [c.questions for c in counts] == [6, 3]
    finally:
        second.stop()
