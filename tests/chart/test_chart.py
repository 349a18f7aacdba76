"""The Helm chart renders, lints and validates, and its resources keep the
contract of the product (docs/kubernetes.md): names, settings, RBAC,
security context, the default WorkerPool and ValidationPolicy."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml
from conftest import (
    ALL_FEATURES,
    CHART,
    CPU_ONLY,
    CRD_DIR,
    EXAMPLES_DIR,
    GROUP,
    KUBE_VERSION,
    NAMESPACE,
    REPO,
    SCENARIOS,
    describe,
    lint,
    load_yaml_docs,
    render,
    require_crds,
    validate_builtin,
    validate_custom_resource,
    validate_schema,
)

FULLNAME = "demo-picsift"
CUSTOM_GROUPS = (GROUP, "monitoring.coreos.com")
# How the container test runs each role's image (tests/tests/containers.rs).
CONTAINERS = json.loads((REPO / "tests" / "data" / "containers.json").read_text())


def workspace_version() -> str:
    in_section = False
    for line in (REPO / "Cargo.toml").read_text().splitlines():
        if line.startswith("["):
            in_section = line.strip() == "[workspace.package]"
        elif in_section and line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("Cargo.toml has no [workspace.package] version")


def env_names(container_or_spec: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container_or_spec.get("env", [])]


# --- lint, schema, render -------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_clean_in_strict_mode(scenario):
    report = lint(SCENARIOS[scenario])
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not findings, json.dumps(report, indent=2)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_values_pass_the_values_schema(scenario):
    validate_schema(SCENARIOS[scenario])


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"workerPool": {"maxWorkers": "ten"}}, "/workerPool/maxWorkers"),
        ({"workerPool": {"gpu": {"count": -1}}}, "/workerPool/gpu/count"),
        ({"validationPolicy": {"formats": ["gif"]}}, "/validationPolicy/formats"),
        ({"validationPolicy": {"limits": {"maxEntires": 5}}}, "maxEntires"),
        ({"validationPolicy": {"limits": {"maxDimension": 70000}}}, "/validationPolicy/limits/maxDimension"),
        ({"replicas": 3}, "replicas"),
        ({"gateway": {"replica": 3}}, "replica"),
        ({"extraConfig": {"PICSIFT_WORKER_CONCURRENCY": 4}}, "/extraConfig/PICSIFT_WORKER_CONCURRENCY"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ],
)
def test_values_schema_rejects_bad_values(values, complaint):
    with pytest.raises(helm.HelmValuesError) as bad:
        validate_schema(values)
    assert complaint in str(bad.value)
    # An install renders through the same check.
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_missing_required_secret_names_fail_the_render_with_what_to_set():
    for values, key in [
        ({"redis": {"existingSecret": ""}}, "redis.existingSecret"),
        ({"postgres": {"existingSecret": ""}}, "postgres.existingSecret"),
    ]:
        with pytest.raises(helm.HelmRenderError) as bad:
            render(values)
        assert key in str(bad.value)


def test_worker_pool_refuses_min_above_max():
    with pytest.raises(helm.HelmRenderError) as bad:
        render({"workerPool": {"minWorkers": 5, "maxWorkers": 2}})
    assert "workerPool.minWorkers (5) must not exceed workerPool.maxWorkers (2)" in str(bad.value)


def test_extra_config_cannot_shadow_a_setting_the_chart_makes():
    # A duplicate key in the ConfigMap, or a secret in plain text beside its Secret.
    for key in ("PICSIFT_LOG", "PICSIFT_REDIS_URL"):
        with pytest.raises(helm.HelmRenderError) as bad:
            render({"extraConfig": {key: "x"}})
        assert f"extraConfig.{key}: the chart sets {key}" in str(bad.value)


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def test_every_value_the_chart_maps_to_a_setting_is_named_as_the_setting():
    # `PICSIFT_<SECTION>_<KEY>: {{ ... $.Values.section.key ... }}`, or a
    # `{{- with $.Values.section.key }}` guarding the line after it; a
    # helper stands for its value (picsift.log: log).
    text = (CHART / "templates" / "configmap.yaml").read_text()
    helpers = {"picsift.log": "log", "picsift.ttlSecsAfterFinished": "operator.ttlSecsAfterFinished"}
    mapped = {}
    guard = None
    for line in text.splitlines():
        if m := re.search(r"with \$\.Values\.([A-Za-z0-9.]+) }}", line):
            guard = m.group(1)
            continue
        if m := re.match(r"\s+(PICSIFT_[A-Z0-9_]+): (.*)", line):
            env, expr = m.groups()
            if v := re.search(r"\$\.Values\.([A-Za-z0-9.]+)", expr):
                mapped[env] = v.group(1)
            elif h := re.search(r'include "([a-zA-Z.]+)"', expr):
                mapped[env] = helpers[h.group(1)]
            elif guard and "{{ . " in expr:
                mapped[env] = guard
        guard = None if "end" in line else guard
    assert len(mapped) >= 8, mapped
    for env, value in mapped.items():
        assert env == "PICSIFT_" + "_".join(_snake(p) for p in value.split(".")).upper(), (env, value)


def test_renamed_values_still_work_with_a_warning():
    current = render({"log": "debug", "operator": {"ttlSecsAfterFinished": 60}})
    old = render({"logLevel": "debug", "operator": {"ttlSecondsAfterFinished": 60}})
    for rendered in (current, old):
        data = rendered.one("ConfigMap", f"{FULLNAME}-config")["data"]
        assert (data["PICSIFT_LOG"], data["PICSIFT_OPERATOR_TTL_SECS_AFTER_FINISHED"]) == ("debug", "60")
    assert "DEPRECATED" not in current.notes
    assert "logLevel is now log" in old.notes
    assert "operator.ttlSecondsAfterFinished is now" in old.notes


def test_pdb_refuses_both_min_available_and_max_unavailable():
    with pytest.raises(helm.HelmRenderError) as bad:
        render({"gateway": {"pdb": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}})
    assert "not both" in str(bad.value)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_builtin_manifests_validate_strictly_for_kubernetes_1_33(scenario):
    rendered = render(SCENARIOS[scenario])
    checked = 0
    for template, doc in rendered.docs:
        if doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        try:
            validate_builtin(doc)
        except Exception as error:  # kubernetes-validate's errors carry no origin
            pytest.fail(f"{template}: {describe(doc)}: {getattr(error, 'message', error)}", pytrace=False)
        checked += 1
    print(f"\n  {scenario}: {checked} built-in manifests valid for Kubernetes {KUBE_VERSION} (strict)")
    assert checked >= 15


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_namespaced_manifests_name_their_namespace(scenario):
    # `helm template | kubectl apply` and GitOps tools apply them where they say.
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "WorkerPool"}
    for template, doc in render(SCENARIOS[scenario]).docs:
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], f"{template}: {describe(doc)}"
        else:
            assert doc["metadata"].get("namespace"), f"{template}: {describe(doc)} has no namespace"


def test_every_resource_carries_the_standard_labels():
    for template, doc in render(ALL_FEATURES).docs:
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{template}: {describe(doc)} lacks label {key}"


# --- custom resources against the generated CRDs --------------------------


def test_generated_crds_are_present_and_valid_for_kubernetes_1_33():
    crds = require_crds()
    for kind, crd in crds.items():
        validate_builtin(crd)
        assert crd["spec"]["group"] == GROUP
        assert any(v["name"] == "v1alpha1" and v.get("served") for v in crd["spec"]["versions"]), kind
    expect = {"UploadBatch": ("Namespaced", "ub"), "ValidationPolicy": ("Namespaced", "vp"), "WorkerPool": ("Cluster", "wp")}
    assert set(crds) == set(expect)
    for kind, (scope, short) in expect.items():
        assert crds[kind]["spec"]["scope"] == scope, kind
        assert short in crds[kind]["spec"]["names"].get("shortNames", []), kind
    rules = sum(json.dumps(crd).count('"x-kubernetes-validations"') for crd in crds.values())
    print(f"\n  {len(crds)} CRDs in {CRD_DIR.relative_to(REPO)}/ valid for Kubernetes {KUBE_VERSION}")
    print(f"  note: the {rules} CEL rule sets (x-kubernetes-validations) are checked by the API server, not here")


def test_uploadbatch_lists_the_columns_the_docs_promise():
    # docs/kubernetes.md: NAME, PHASE, ACCEPTED, DUPLICATE, REJECTED, AGE.
    crd = require_crds()["UploadBatch"]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    columns = [c["name"].upper() for c in version.get("additionalPrinterColumns", [])]
    for column in ("PHASE", "ACCEPTED", "DUPLICATE", "REJECTED", "AGE"):
        assert column in columns, f"UploadBatch printer columns {columns} lack {column}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_custom_resources_match_the_generated_crds(scenario):
    crds = require_crds()
    rendered = render(SCENARIOS[scenario])
    checked = []
    for template, doc in rendered.docs:
        if doc["apiVersion"].startswith(GROUP + "/"):
            validate_custom_resource(doc, crds, template)
            checked.append(describe(doc))
    print(f"\n  {scenario}: valid against the CRDs: {', '.join(checked)}")
    assert len(checked) == 2


def test_nudenet_policy_renders_a_model_the_crd_accepts():
    crds = require_crds()
    values = {"validationPolicy": {"nudenet": {"enabled": True, "threshold": 0.7},
                                   "quality": {"minSharpness": 40, "maxOverexposed": None}}}
    policy = render(values).one("ValidationPolicy", "default", NAMESPACE)
    validate_custom_resource(policy, crds, "validationpolicy.yaml")
    (model,) = policy["spec"]["models"]
    assert model["name"] == "nudenet" and model["source"] == "blob:models/nudenet-320n.pt"
    assert len(model["labels"]) == 18 and model["fit"] == "pad"
    assert {r["label"] for r in model["reject"]} >= {"FEMALE_BREAST_EXPOSED", "MALE_GENITALIA_EXPOSED"}
    assert all(r["atLeast"] == 0.7 for r in model["reject"])
    assert policy["spec"]["quality"]["minSharpness"] == 40


def test_crd_examples_match_the_generated_crds():
    crds = require_crds()
    files = sorted(EXAMPLES_DIR.glob("*.yaml")) + sorted(EXAMPLES_DIR.glob("*.yml"))
    if not files:
        pytest.fail(f"no example manifests in {EXAMPLES_DIR.relative_to(REPO)}/ (*.yaml)", pytrace=False)
    checked = 0
    for path in files:
        origin = str(path.relative_to(REPO))
        for doc in load_yaml_docs(path):
            if doc["apiVersion"].startswith(GROUP + "/"):
                validate_custom_resource(doc, crds, origin)
            else:
                validate_builtin(doc)
            checked += 1
    print(f"\n  {checked} example manifests in {len(files)} files valid")


def test_rbac_names_only_resources_the_crds_define():
    crds = require_crds()
    plurals = {crd["spec"]["names"]["plural"]: crd for crd in crds.values()}
    rendered = render(ALL_FEATURES)
    for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
        for rule in role["rules"]:
            if GROUP not in rule["apiGroups"]:
                continue
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                assert plural in plurals, f"{describe(role)}: {resource} is not a picsift.io resource"
                if sub == "status":
                    version = next(v for v in plurals[plural]["spec"]["versions"] if v["name"] == "v1alpha1")
                    assert "status" in version.get("subresources", {}), f"{plural} has no status subresource"
                else:
                    assert sub in ("", "finalizers"), resource


def test_service_monitor_scrapes_the_operator_metrics_service():
    # kubernetes-validate has no schema for monitoring.coreos.com; check the
    # shape that matters: it selects the metrics Service, by port name.
    print("\n  note: ServiceMonitor not schema-validated (not a built-in kind); its shape is checked")
    rendered = render(ALL_FEATURES)
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert not render().of_kind("ServiceMonitor")


# --- the product's contract -----------------------------------------------


def test_gateway_and_operator_run_their_image_as_the_container_test_runs_it():
    rendered = render()
    version = workspace_version()
    for name, port_name in [("gateway", "http"), ("operator", "metrics")]:
        role = CONTAINERS["roles"][name]
        deployment = rendered.one("Deployment", f"{FULLNAME}-{name}", NAMESPACE)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        # scripts/images.sh tags picsift/<role>:<workspace version>.
        assert container["image"] == f"{role['repository']}:{version}"
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["args"] == role["args"]
        assert container["ports"] == [{"name": port_name, "containerPort": role["port"], "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": role["liveness"], "port": port_name}
        assert container["readinessProbe"]["httpGet"] == {"path": role["readiness"], "port": port_name}
        # Non-root as the image's user, read-only root, only the writable
        # paths the container test gives it (each an emptyDir).
        assert pod["securityContext"]["runAsUser"] == CONTAINERS["user"]
        assert pod["securityContext"]["runAsGroup"] == CONTAINERS["group"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = container.get("volumeMounts", [])
        assert [m["mountPath"] for m in mounts] == role["writable"], name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in mounts:
            assert "emptyDir" in volumes[mount["name"]], mount
        assert deployment["spec"]["replicas"] == 2
        # A Service named picsift-* must not inject PICSIFT_*_PORT variables.
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    service = rendered.one("Service", FULLNAME, NAMESPACE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pool = rendered.one("WorkerPool", FULLNAME)
    assert pool["spec"]["image"] == f"{CONTAINERS['roles']['worker']['repository']}:{version}"


def test_images_come_from_the_registry_and_tag_the_values_name():
    images = lambda rendered: [  # noqa: E731
        rendered.one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]["containers"][0]["image"],
        rendered.one("Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]["containers"][0]["image"],
        rendered.one("WorkerPool", FULLNAME)["spec"]["image"],
    ]
    version = workspace_version()
    assert images(render({"image": {"registry": "registry.example.com/team/"}})) == [
        f"registry.example.com/team/picsift/gateway:{version}",
        f"registry.example.com/team/picsift/operator:{version}",
        f"registry.example.com/team/picsift/worker:{version}",
    ]
    assert images(render({"image": {"tag": "1.2.3"}})) == [
        "picsift/gateway:1.2.3",
        "picsift/operator:1.2.3",
        "picsift/worker:1.2.3",
    ]
    assert images(
        render({"image": {"tag": "1.2.3"}, "workerPool": {"image": {"repository": "mine/worker", "tag": "cuda"}}})
    ) == ["picsift/gateway:1.2.3", "picsift/operator:1.2.3", "mine/worker:cuda"]


def test_settings_come_from_one_configmap_and_existing_secrets():
    rendered = render(ALL_FEATURES)
    config = rendered.one("ConfigMap", f"{FULLNAME}-config", NAMESPACE)["data"]
    assert config == {
        "PICSIFT_KUBERNETES_ENABLED": "true",
        "PICSIFT_LISTEN": "0.0.0.0:8080",
        "PICSIFT_OPERATOR_METRICS_LISTEN": "0.0.0.0:9090",
        "PICSIFT_OPERATOR_TTL_SECS_AFTER_FINISHED": "86400",
        "PICSIFT_LOG": "info",
        "PICSIFT_S3_ENDPOINT": "http://garage.storage:3900",
        "PICSIFT_S3_REGION": "garage",
        "PICSIFT_S3_BUCKET": "picsift",
        "PICSIFT_S3_PREFIX": "prod/",
        "PICSIFT_S3_PATH_STYLE": "true",
        "PICSIFT_REDIS_PREFIX": "picsift:",
        "PICSIFT_WORKER_CONCURRENCY": "4",
        "PICSIFT_POLICY_MAX_ENTRIES": "20000",
    }
    secrets = {
        "PICSIFT_REDIS_URL": ("picsift-redis", "url"),
        "PICSIFT_POSTGRES_URL": ("picsift-postgres", "url"),
        "PICSIFT_S3_ACCESS_KEY_ID": ("picsift-s3", "access-key-id"),
        "PICSIFT_S3_SECRET_ACCESS_KEY": ("picsift-s3", "secret-access-key"),
        "PICSIFT_WEBHOOK_SECRET": ("picsift-webhook", "secret"),
    }
    pool = rendered.one("WorkerPool", FULLNAME)["spec"]
    holders = [("WorkerPool", pool)] + [
        (d["metadata"]["name"], d["spec"]["template"]["spec"]["containers"][0]) for d in rendered.of_kind("Deployment")
    ]
    for holder, spec in holders:
        assert spec["envFrom"] == [{"configMapRef": {"name": f"{FULLNAME}-config"}}], holder
        refs = {
            e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in spec["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert refs == secrets, holder
        assert not any("value" in e for e in spec["env"]), f"{holder}: a literal value in env"
        if holder != "WorkerPool":
            (ns,) = [e for e in spec["env"] if e["name"] == "PICSIFT_KUBERNETES_NAMESPACE"]
            assert ns["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The pods roll when the settings change.
    changed = render({**ALL_FEATURES, "log": "debug"})
    for name in ("gateway", "operator"):
        before = rendered.one("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["metadata"]["annotations"]
        after = changed.one("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["metadata"]["annotations"]
        assert before["checksum/config"] != after["checksum/config"]


def test_the_bootstrap_admin_key_reaches_the_gateway_only():
    rendered = render({"auth": {"existingSecret": "picsift-admin-key"}})
    gateway = rendered.one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in gateway["containers"][0]["env"]}
    assert env["PICSIFT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "picsift-admin-key",
        "key": "admin-key",
    }
    operator = rendered.one("Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    assert "PICSIFT_ADMIN_KEY" not in {e["name"] for e in operator["containers"][0]["env"]}
    assert "PICSIFT_ADMIN_KEY" not in env_names(rendered.one("WorkerPool", FULLNAME)["spec"])
    plain = render().one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]
    assert "PICSIFT_ADMIN_KEY" not in {e["name"] for e in plain["containers"][0]["env"]}


def test_optional_secrets_are_left_out_when_not_named():
    rendered = render(CPU_ONLY)
    pool = rendered.one("WorkerPool", FULLNAME)["spec"]
    assert env_names(pool) == ["PICSIFT_REDIS_URL", "PICSIFT_POSTGRES_URL"]
    config = rendered.one("ConfigMap", f"{FULLNAME}-config")["data"]
    assert "PICSIFT_S3_ENDPOINT" not in config and "PICSIFT_S3_PREFIX" not in config


def test_pods_run_restricted_with_a_writable_tmp_for_the_gateway():
    rendered = render()
    for deployment in rendered.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    gateway = rendered.one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]
    assert gateway["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert gateway["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    unbounded = render(CPU_ONLY).one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]
    assert unbounded["volumes"] == [{"name": "tmp", "emptyDir": {}}]


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '') for every grant."""
    grants = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames", [""]):
                        grants.add((group, resource, verb, name))
    return grants


def grants(group: str, resource: str, verbs: str, name: str = "") -> set[tuple[str, str, str, str]]:
    return {(group, resource, verb, name) for verb in verbs.split()}


def test_rbac_is_least_privilege():
    rendered = render()
    cluster = rendered.one("ClusterRole", f"{FULLNAME}-operator")
    assert rules_of(cluster) == (
        grants(GROUP, "uploadbatches", "get list watch patch update delete")
        | grants(GROUP, "uploadbatches/status", "get patch update")
        | grants(GROUP, "uploadbatches/finalizers", "update")
        | grants(GROUP, "validationpolicies", "get list watch")
        | grants(GROUP, "workerpools", "get list watch")
        | grants(GROUP, "workerpools/status", "get patch update")
        | grants(GROUP, "workerpools/finalizers", "update")
        | grants("events.k8s.io", "events", "create patch")
    )
    election = rendered.one("Role", f"{FULLNAME}-operator-leader-election", NAMESPACE)
    assert rules_of(election) == grants("coordination.k8s.io", "leases", "create") | grants(
        "coordination.k8s.io", "leases", "get update patch", "picsift-operator"
    )
    jobs = rendered.one("Role", f"{FULLNAME}-operator-jobs", NAMESPACE)
    assert rules_of(jobs) == grants("batch", "jobs", "get list watch create delete patch") | grants(
        "", "pods", "get list watch"
    )
    gateway = rendered.one("Role", f"{FULLNAME}-gateway", NAMESPACE)
    assert rules_of(gateway) == grants(GROUP, "uploadbatches", "create get") | grants(
        GROUP, "validationpolicies", "get"
    )
    # Each role is bound to its own ServiceAccount, and the worker to none.
    bound = {}
    for binding in rendered.of_kind("RoleBinding") + rendered.of_kind("ClusterRoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["namespace"] == NAMESPACE
        bound[binding["roleRef"]["name"]] = subject["name"]
    assert bound == {
        f"{FULLNAME}-operator": f"{FULLNAME}-operator",
        f"{FULLNAME}-operator-leader-election": f"{FULLNAME}-operator",
        f"{FULLNAME}-operator-jobs": f"{FULLNAME}-operator",
        f"{FULLNAME}-gateway": f"{FULLNAME}-gateway",
    }
    worker = rendered.one("ServiceAccount", f"{FULLNAME}-worker", NAMESPACE)
    assert worker["automountServiceAccountToken"] is False
    for name in ("gateway", "operator"):
        pod = rendered.one("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{FULLNAME}-{name}"


def test_default_worker_pool_and_validation_policy():
    rendered = render()
    pool = rendered.one("WorkerPool", FULLNAME)
    assert pool["apiVersion"] == f"{GROUP}/v1alpha1"
    assert pool["spec"]["minWorkers"] == 0
    assert pool["spec"]["maxWorkers"] == 10
    assert pool["spec"]["targetBacklogPerWorker"] == 4
    assert pool["spec"]["idleTimeoutSeconds"] == 300
    assert pool["spec"]["namespace"] == NAMESPACE
    assert pool["spec"]["serviceAccountName"] == f"{FULLNAME}-worker"
    # A default install schedules on a cluster without GPUs.
    for absent in ("gpu", "nodeSelector", "tolerations", "priorityClassName", "kueueQueueName", "resources"):
        assert absent not in pool["spec"], absent
    policy = rendered.one("ValidationPolicy", "default", NAMESPACE)
    assert policy["apiVersion"] == f"{GROUP}/v1alpha1"
    assert policy["spec"] == {
        "formats": ["jpeg", "png", "webp", "heic", "avif"],
        "audit": {"sampleRate": 0.1},
        "dedupScope": "global",
        "sharedImages": False,
        "sanitize": "strip",
        "gainMaps": "drop",
        "animation": "still",
    }
    assert "gpu" not in render(CPU_ONLY).one("WorkerPool", FULLNAME)["spec"]
    gpu = render({"workerPool": {"gpu": {"count": 1}}}).one("WorkerPool", FULLNAME)["spec"]["gpu"]
    assert gpu == {"resourceName": "nvidia.com/gpu", "count": 1}
    assert not render({"workerPool": {"enabled": False}}).of_kind("WorkerPool")
    assert not render({"validationPolicy": {"enabled": False}}).of_kind("ValidationPolicy")


def test_gpu_pool_with_kueue_queue_and_its_own_namespace():
    rendered = render(ALL_FEATURES)
    spec = rendered.one("WorkerPool", FULLNAME)["spec"]
    wanted = ALL_FEATURES["workerPool"]
    assert spec["gpu"] == {"resourceName": "nvidia.com/gpu", "count": 2}
    assert spec["kueueQueueName"] == "gpu-batch"
    assert spec["namespace"] == "picsift-workers"
    for key in ("minWorkers", "maxWorkers", "targetBacklogPerWorker", "idleTimeoutSeconds", "resources",
                "nodeSelector", "tolerations", "priorityClassName"):
        assert spec[key] == wanted[key], key
    # Jobs in another namespace still find their ServiceAccount and settings,
    # and the operator may manage them there.
    jobs_ns = "picsift-workers"
    assert rendered.one("ServiceAccount", f"{FULLNAME}-worker", jobs_ns)["automountServiceAccountToken"] is False
    assert rendered.one("ConfigMap", f"{FULLNAME}-config", jobs_ns)["data"] == rendered.one(
        "ConfigMap", f"{FULLNAME}-config", NAMESPACE
    )["data"]
    role = rendered.one("Role", f"{FULLNAME}-operator-jobs", jobs_ns)
    binding = rendered.one("RoleBinding", f"{FULLNAME}-operator-jobs", jobs_ns)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}]
    assert ("batch", "jobs", "create", "") in rules_of(role)
    # Large limits stay integers (Helm reads numbers as floats).
    limits = rendered.one("ValidationPolicy", "default", NAMESPACE)["spec"]["limits"]
    assert limits == ALL_FEATURES["validationPolicy"]["limits"]
    # Image pull secrets reach the workers through their ServiceAccount.
    for sa in rendered.of_kind("ServiceAccount"):
        assert sa["imagePullSecrets"] == [{"name": "registry"}], describe(sa)


def test_scheduling_values_reach_gateway_and_operator_pods():
    rendered = render(ALL_FEATURES)
    for name in ("gateway", "operator"):
        pod = rendered.one("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["spec"]
        wanted = ALL_FEATURES[name]
        assert pod["nodeSelector"] == wanted["nodeSelector"]
        assert pod["tolerations"] == wanted["tolerations"]
        assert pod["priorityClassName"] == wanted["priorityClassName"]
    gateway = rendered.one("Deployment", f"{FULLNAME}-gateway")["spec"]["template"]
    assert gateway["spec"]["affinity"] == ALL_FEATURES["gateway"]["affinity"]
    assert gateway["metadata"]["labels"]["team"] == "images"
    assert gateway["metadata"]["annotations"]["example.com/team"] == "images"


def test_disruption_budgets_select_their_component():
    rendered = render(ALL_FEATURES)
    gateway = rendered.one("PodDisruptionBudget", f"{FULLNAME}-gateway")["spec"]
    operator = rendered.one("PodDisruptionBudget", f"{FULLNAME}-operator")["spec"]
    assert gateway["minAvailable"] == 1 and "maxUnavailable" not in gateway
    assert operator["maxUnavailable"] == 1 and "minAvailable" not in operator
    for name, pdb in (("gateway", gateway), ("operator", operator)):
        pod_labels = rendered.one("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not render().of_kind("PodDisruptionBudget")


def test_network_policies_open_the_service_ports_and_the_configured_egress():
    rendered = render(ALL_FEATURES)
    gateway = rendered.one("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]
    operator = rendered.one("NetworkPolicy", f"{FULLNAME}-operator")["spec"]
    assert gateway["policyTypes"] == ["Ingress", "Egress"]
    assert gateway["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}], "from": ALL_FEATURES["networkPolicy"]["gatewayIngressFrom"]}
    ]
    assert operator["ingress"] == [
        {"ports": [{"port": 9090, "protocol": "TCP"}], "from": ALL_FEATURES["networkPolicy"]["metricsIngressFrom"]}
    ]
    egress_ports = {p["port"] for rule in gateway["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 6379, 5432, 443, 6443, 8443}
    redis = [r for r in gateway["egress"] if r["ports"] == [{"port": 6379, "protocol": "TCP"}]]
    assert redis == [{"ports": [{"port": 6379, "protocol": "TCP"}], "to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]}]
    assert operator["egress"] == gateway["egress"]
    open_egress = render(CPU_ONLY).one("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]
    assert open_egress["policyTypes"] == ["Ingress"] and "egress" not in open_egress
    assert open_egress["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    dropped = render({"networkPolicy": {"enabled": True, "egress": {"rules": {"s3": None}}}})
    ports = {p["port"] for r in dropped.one("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]["egress"] for p in r["ports"]}
    assert ports == {53, 6379, 5432, 443, 6443}  # 443 stays: the API server rule
    assert len(dropped.one("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]["egress"]) == 4
    assert not render().of_kind("NetworkPolicy")


def test_notes_say_how_to_turn_gpus_on():
    assert "--set workerPool.gpu.count=1" in render().notes
    notes = render({"workerPool": {"gpu": {"count": 2}}}).notes
    assert "Each worker requests 2 nvidia.com/gpu" in notes
    assert "--set workerPool.gpu.count=1" not in notes


def test_notes_say_how_to_upload_a_first_batch():
    notes = render().notes
    assert f"port-forward svc/{FULLNAME} 8080:80" in notes
    assert "curl -X POST --data-binary @photos.zip -H \"Authorization: Bearer $KEY\"" in notes
    assert "picsift admin keys create" in notes
    assert "-H 'Content-Type: application/zip' http://localhost:8080/v1/batches" in notes
    assert "picsift upload" in notes
    assert "kubectl -n picsift get uploadbatches" in notes


def test_chart_metadata():
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    assert metadata["kubeVersion"] == ">=1.33.0-0"
    # The images' default tag is the appVersion: the version scripts/images.sh tags.
    assert metadata["appVersion"] == workspace_version()
    assert metadata["version"] == workspace_version()
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    # Every default value is described by the schema.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"]), set(defaults) - set(schema["properties"])
