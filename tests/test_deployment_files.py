"""The deployment files agree with the Compose Specification, with each other and with the package.

No Docker engine or Collector binary is needed: the compose file is validated against the Compose
Specification JSON schema (vendored in tests/data/compose-spec.json; source and licence in
tests/data/README.md), and the Collector, Loki, Tempo, Prometheus and Grafana files are checked for
the structure their programs require.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import textwrap
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml
from flask import Flask

from otel_flask_monitor.aggregates.workers import AUTO as MULTIPROCESS_AUTO
from otel_flask_monitor.config import resolve_settings
from otel_flask_monitor.system_metrics import ProcessSampler, register_instruments
from tests.support.prometheus_names import prometheus_metric_name

REPO: Final = Path(__file__).resolve().parent.parent
COMPOSE_SCHEMA: Final = REPO / "tests" / "data" / "compose-spec.json"
COMPOSE_FILE: Final = REPO / "docker-compose.yml"
COLLECTOR_CONFIG: Final = REPO / "collector-config.yaml"
DOCKERFILE: Final = REPO / "Dockerfile"
DATASOURCES_DIR: Final = REPO / "deploy" / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS_DIR: Final = REPO / "deploy" / "grafana" / "provisioning" / "dashboards"

APP_SERVICE: Final = "app"
COLLECTOR_SERVICE: Final = "otel-collector"
MIN_COLLECTOR_VERSION: Final = (0, 131, 0)
# `otlphttp` was renamed `otlp_http` in collector v0.144 (the old name stays as an alias).
OTLP_HTTP_EXPORTERS: Final = frozenset({"otlphttp", "otlp_http"})
OTLP_GRPC_EXPORTERS: Final = frozenset({"otlp", "otlp_grpc"})
DEMO_APP_TARGET: Final = "otel_flask_monitor.demo.app:create_app()"


def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = _yaml(COMPOSE_FILE)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    document: dict[str, Any] = _yaml(COLLECTOR_CONFIG)
    return document


def _component_type(name: str) -> str:
    return name.split("/", 1)[0]


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of every bind mount of a service (named volumes left out)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                continue
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        mounts.append(((COMPOSE_FILE.parent / source).resolve(), PurePosixPath(target)))
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path inside the container comes from on the host, when it is under a bind mount."""
    wanted = PurePosixPath(container_path)
    for host, target in _bind_mounts(service):
        if wanted == target:
            return host
        if target in wanted.parents:
            return host / wanted.relative_to(target)
    return None


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _url(text: str) -> tuple[str, int, str]:
    parts = urlsplit(text if "://" in text else "//" + text)
    assert parts.hostname is not None, f"{text!r} needs a host"
    assert parts.port is not None, f"{text!r} needs a port"
    return parts.hostname, parts.port, parts.path


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _published_container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).rsplit(":", 1)[-1].split("/", 1)[0]))
    return ports


def _datasources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DATASOURCES_DIR.glob("*.y*ml")):
        document = _yaml(path)
        assert document.get("apiVersion") == 1, f"{path.name}: apiVersion 1 expected"
        found.extend(document.get("datasources", []))
    return found


# --- compose -----------------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The schema says draft-07 in a spelling jsonschema does not look up: name the draft.
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_file_the_compose_file_builds_or_mounts_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = COMPOSE_FILE.parent / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} missing"
        for host, target in _bind_mounts(service):
            assert host.exists(), f"{name}: mounts {host} at {target}, which does not exist"
        # Files a command names inside a bind mount (config files, the locustfile) must exist too.
        for argument in _command(service):
            value = argument.split("=", 1)[-1]
            if value.startswith("/"):
                host_path = _host_path(service, value)
                if host_path is not None:
                    assert host_path.exists(), f"{name}: its command reads {value} = {host_path}, missing"


def test_named_volumes_are_declared_and_images_pinned(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.partition(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if isinstance(volume, str) and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: named volume {source!r} not declared"
        image = service.get("image")
        if image and "build" not in service:
            tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert tag not in ("", "latest"), f"{name}: image {image!r} must be pinned to a version"


def test_depends_on_conditions_have_something_to_wait_for(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, but {dependency} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot job"


def test_loadtest_service_is_behind_a_profile(services: dict[str, dict[str, Any]]) -> None:
    locust = services["locust"]
    assert locust.get("profiles") == ["loadtest"]
    command = _command(locust)
    locustfile = _host_path(locust, command[command.index("-f") + 1])
    assert locustfile == REPO / "loadtest" / "locustfile.py"
    assert command[command.index("--host") + 1] == "http://app:5001"


def test_collector_image_is_new_enough(services: dict[str, dict[str, Any]]) -> None:
    image = services[COLLECTOR_SERVICE]["image"]
    assert image.startswith("otel/opentelemetry-collector-contrib:"), image
    version = tuple(int(part) for part in image.rsplit(":", 1)[1].split("."))
    assert version >= MIN_COLLECTOR_VERSION, f"{image}: the Collector must be >= 0.131"


# --- the app: Dockerfile and compose agree with the Collector -------------------------------------------


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def test_the_app_image_serves_the_demo_with_gunicorn(services: dict[str, dict[str, Any]]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    argv = json.loads(cmd)
    assert argv[0] == "gunicorn"
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:5001"
    assert argv[argv.index("--workers") + 1] == "2"
    assert argv[-1] == DEMO_APP_TARGET
    module_name, _, factory = DEMO_APP_TARGET.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, factory.removesuffix("()")))
    assert 5001 in _published_container_ports(services[APP_SERVICE])


def test_app_exports_to_the_collector_receiver(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    http_port = _port_of(protocols["http"]["endpoint"])
    grpc_port = _port_of(protocols["grpc"]["endpoint"])
    assert (grpc_port, http_port) == (4317, 4318)
    for source, env in (
        ("docker-compose.yml", _env(services[APP_SERVICE])),
        ("Dockerfile", _dockerfile_env()),
    ):
        assert env["OTEL_SERVICE_NAME"] == "shop", source
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", source
        host, port, path = _url(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert host == COLLECTOR_SERVICE, f"{source}: the app must export to the {COLLECTOR_SERVICE} service"
        assert port == http_port, f"{source}: http/protobuf goes to the Collector's HTTP receiver {http_port}"
        assert path in ("", "/"), f"{source}: the base endpoint carries no path (the SDK adds /v1/<signal>)"
    # Apps on the host reach the same receivers through published ports.
    assert {grpc_port, http_port} <= _published_container_ports(services[COLLECTOR_SERVICE])


# --- the Collector configuration --------------------------------------------------------------------------


def test_every_pipeline_component_is_defined(collector: dict[str, Any]) -> None:
    service = collector["service"]
    for extension in service.get("extensions", []):
        assert extension in collector.get("extensions", {}), f"extension {extension!r} not defined"
    assert service["pipelines"], "no pipelines"
    for pipeline_name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), f"{pipeline_name}: {kind[:-1]} {component!r}"
        assert pipeline["receivers"], pipeline_name
        assert pipeline["exporters"], pipeline_name


def test_memory_limiter_comes_first_and_batch_is_used(collector: dict[str, Any]) -> None:
    for pipeline_name, pipeline in collector["service"]["pipelines"].items():
        processors = pipeline.get("processors", [])
        assert processors, f"{pipeline_name}: no processors"
        assert _component_type(processors[0]) == "memory_limiter", f"{pipeline_name}: {processors}"
        assert any(_component_type(p) == "batch" for p in processors), f"{pipeline_name}: no batch"


def test_no_removed_loki_exporter(collector: dict[str, Any]) -> None:
    exporters = collector.get("exporters", {})
    assert not [name for name in exporters if _component_type(name) == "loki"], (
        "the contrib `loki` exporter was removed (last in v0.130): use otlphttp to Loki's /otlp"
    )


def test_logs_go_to_loki_native_otlp_with_a_persistent_queue(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    logs = collector["service"]["pipelines"]["logs"]
    exporter_name = logs["exporters"][-1]
    assert _component_type(exporter_name) in OTLP_HTTP_EXPORTERS, exporter_name
    exporter = collector["exporters"][exporter_name]
    host, port, path = _url(exporter["endpoint"])
    assert path == "/otlp", "the exporter appends /v1/logs; Loki listens on /otlp/v1/logs"
    assert host == "loki"
    assert host in services
    loki_config_path = _host_path(services["loki"], _command(services["loki"])[0].split("=", 1)[1])
    assert loki_config_path is not None
    loki = _yaml(loki_config_path)
    assert port == loki["server"]["http_listen_port"]
    # Loki's OTLP ingestion needs schema v13 on tsdb and structured metadata.
    newest = loki["schema_config"]["configs"][-1]
    assert (newest["schema"], newest["store"]) == ("v13", "tsdb")
    assert loki["limits_config"].get("allow_structured_metadata", True) is True
    queue = exporter["sending_queue"]
    assert queue.get("enabled", True) is True
    assert queue["storage"] in collector["extensions"], "the queue's storage must be a defined extension"
    assert _component_type(queue["storage"]) == "file_storage"
    assert queue["storage"] in collector["service"]["extensions"]
    storage_dir = collector["extensions"][queue["storage"]]["directory"]
    mounted = [v for v in services[COLLECTOR_SERVICE]["volumes"] if v.split(":")[1] == storage_dir]
    assert mounted, "the queue directory must be a volume"
    assert not mounted[0].startswith("."), "the queue directory needs a named volume"
    assert exporter["retry_on_failure"].get("enabled", True) is True


def test_traces_and_metrics_reach_their_backends(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    pipelines = collector["service"]["pipelines"]
    (traces_exporter,) = pipelines["traces"]["exporters"]
    assert _component_type(traces_exporter) in OTLP_GRPC_EXPORTERS
    host, port, _ = _url(collector["exporters"][traces_exporter]["endpoint"])
    tempo_config = _host_path(services[host], _command(services[host])[0].split("=", 1)[1])
    assert tempo_config is not None
    tempo_receiver = _yaml(tempo_config)["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert port == _port_of(tempo_receiver)
    (metrics_exporter,) = pipelines["metrics"]["exporters"]
    assert _component_type(metrics_exporter) in OTLP_HTTP_EXPORTERS
    host, port, path = _url(collector["exporters"][metrics_exporter]["endpoint"])
    assert (host, port, path) == ("prometheus", 9090, "/api/v1/otlp")
    assert "--web.enable-otlp-receiver" in _command(services["prometheus"])


def test_collector_health_check_and_resource_attributes(collector: dict[str, Any]) -> None:
    assert "health_check" in collector["service"]["extensions"]
    assert _port_of(collector["extensions"]["health_check"]["endpoint"]) == 13133
    actions = collector["processors"]["resource"]["attributes"]
    assert any(action["key"] == "deployment.environment.name" for action in actions)
    for pipeline in collector["service"]["pipelines"].values():
        assert "resource" in pipeline["processors"]


# --- Grafana provisioning ---------------------------------------------------------------------------


def test_datasources_parse_and_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    datasources = _datasources()
    by_uid = {datasource["uid"]: datasource for datasource in datasources}
    assert {"loki", "tempo", "prometheus"} <= {d["type"] for d in datasources}
    assert len(by_uid) == len(datasources), "datasource uids must be unique"
    for datasource in datasources:
        host, _, _ = _url(datasource["url"])
        assert host in services, f"{datasource['name']}: {host} is not a compose service"
    loki = next(d for d in datasources if d["type"] == "loki")
    _, loki_port, _ = _url(loki["url"])
    loki_config_path = _host_path(services["loki"], _command(services["loki"])[0].split("=", 1)[1])
    assert loki_config_path is not None
    assert loki_port == _yaml(loki_config_path)["server"]["http_listen_port"]
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["matcherType"] == "label"
    assert derived["matcherRegex"] == "trace_id"
    assert by_uid[derived["datasourceUid"]]["type"] == "tempo"
    assert derived["url"] == "$${__value.raw}", "provisioning expands $VARS: a literal $ is written $$"
    tempo = next(d for d in datasources if d["type"] == "tempo")
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] in by_uid


def test_dashboards_are_provisioned_and_use_existing_datasources(services: dict[str, dict[str, Any]]) -> None:
    uids = {datasource["uid"] for datasource in _datasources()}
    (provider,) = _yaml(DASHBOARD_PROVIDERS_DIR / "dashboards.yaml")["providers"]
    host_dir = _host_path(services["grafana"], provider["options"]["path"])
    assert host_dir is not None, "the provider's path must be mounted"
    assert host_dir.is_dir()
    dashboards = sorted(host_dir.glob("*.json"))
    assert dashboards
    home = _env(services["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _host_path(services["grafana"], home) in dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"]
        assert dashboard["title"]
        referenced = [panel.get("datasource") for panel in dashboard["panels"] if panel["type"] != "row"]
        referenced += [t.get("datasource") for p in dashboard["panels"] for t in p.get("targets", [])]
        referenced += [v.get("datasource") for v in dashboard.get("templating", {}).get("list", [])]
        for datasource in referenced:
            assert isinstance(datasource, dict), f"{path.name}: {datasource}"
            assert datasource["uid"] in uids, f"{path.name}: {datasource}"
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{path.name}: duplicate panel ids"


# --- the stack in detail: pins, app server, Prometheus names, Collector telemetry (issue 10) -----------

DEPLOYMENT_DOC: Final = REPO / "docs" / "deployment.md"
TROUBLESHOOTING_DOC: Final = REPO / "docs" / "troubleshooting.md"
PROMETHEUS_SERVICE: Final = "prometheus"
HOST_CPUS: Final = 2
"""The compose stack is sized for a 2-CPU host (the CI and demo machines)."""
# An exact release: three numbers, optionally a variant (python's `-slim-trixie`); never `latest`,
# a floating major (`1`) or minor (`3.12-slim`).
EXACT_RELEASE_TAG: Final = re.compile(r"^v?\d+\.\d+\.\d+(?:-[a-z0-9]+)*$")

# The Collector's exporter metrics in its pinned release: opentelemetry-collector v0.140.0,
# exporter/exporterhelper/metadata.yaml (documentation.md lists them with the otelcol_ prefix, the
# names a Prometheus reader with without_units/without_type_suffix serves).
COLLECTOR_EXPORTER_METRICS: Final = frozenset(
    {
        "otelcol_exporter_enqueue_failed_log_records",
        "otelcol_exporter_enqueue_failed_metric_points",
        "otelcol_exporter_enqueue_failed_spans",
        "otelcol_exporter_queue_capacity",
        "otelcol_exporter_queue_size",
        "otelcol_exporter_send_failed_log_records",
        "otelcol_exporter_send_failed_metric_points",
        "otelcol_exporter_send_failed_spans",
        "otelcol_exporter_sent_log_records",
        "otelcol_exporter_sent_metric_points",
        "otelcol_exporter_sent_spans",
    }
    | {f"otelcol_exporter_queue_batch_send_size{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    | {f"otelcol_exporter_queue_batch_send_size_bytes{suffix}" for suffix in ("_bucket", "_sum", "_count")}
)

# Resource attributes Loki 3.7 makes index labels unless `ignore_defaults: true`: grafana/loki v3.7.4,
# pkg/loghttp/push/otlp_config.go, GlobalOTLPConfig.RegisterFlags.
LOKI_DEFAULT_INDEX_LABELS: Final = (
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
)

_PROMQL_KEYWORDS: Final = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        # Cases of otlptranslator v1.0.0 metric_namer_test.go (UTF8Allowed false, suffixes on) and the
        # example in its MetricNamer doc comment.
        ("requests", "", "counter", "requests_total"),
        ("cpu_usage", "1", "gauge", "cpu_usage_ratio"),
        ("items", "1", "counter", "items_total"),
        ("response_time", "ms", "gauge", "response_time_milliseconds"),
        ("memory_usage", "By", "gauge", "memory_usage_bytes"),
        ("requests", "1/s", "gauge", "requests_per_second"),
        ("throughput", "By/s", "gauge", "throughput_bytes_per_second"),
        ("custom_metric", "custom_unit", "gauge", "custom_metric_custom_unit"),
        ("custom_metric", "{custom}", "gauge", "custom_metric"),
        ("custom_metric", "By/{custom}", "gauge", "custom_metric_bytes"),
        ("metric@with#special$chars", "", "gauge", "metric_with_special_chars"),
        ("123metric", "", "gauge", "_123metric"),
        ("http.server.duration", "s", "histogram", "http_server_duration_seconds"),
    ],
)
def test_the_prometheus_name_translation_matches_upstream_cases(
    name: str, unit: str, kind: str, expected: str
) -> None:
    assert prometheus_metric_name(name, unit, kind) == expected


def _dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")


def _dockerfile_argv() -> list[str]:
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])\s*$", _dockerfile_text(), re.MULTILINE)
    argv: list[str] = json.loads(cmd)
    return argv


def _container_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The app container's environment: the image's ENV, overridden by compose's `environment`."""
    return {**_dockerfile_env(), **_env(services[APP_SERVICE])}


def test_every_image_is_an_exact_release_and_the_docs_name_the_same(
    services: dict[str, dict[str, Any]],
) -> None:
    (base_image,) = re.findall(r"^FROM\s+(\S+)", _dockerfile_text(), re.MULTILINE)
    images = {name: service["image"] for name, service in services.items() if "build" not in service}
    images["Dockerfile FROM"] = base_image
    docs = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image!r} has no tag"
        assert EXACT_RELEASE_TAG.match(tag), f"{name}: {image!r} is not pinned to an exact release"
        named = set(re.findall(rf"`{re.escape(repository)}:([^`\s]+)`", docs))
        assert named == {tag}, f"docs/deployment.md names {repository} as {sorted(named)}, compose uses {tag}"


def test_the_app_serves_with_threads_sized_for_two_cpus() -> None:
    from gunicorn.config import Config

    argv = _dockerfile_argv()
    assert argv[0] == "gunicorn"
    # Read the command the way gunicorn itself does (gunicorn.app.base.Application.load_config).
    config = Config()
    for key, value in vars(config.parser().parse_args(argv[1:])).items():
        if value is not None and key != "args":
            config.set(key.lower(), value)
    assert config.worker_class_str == "gthread", "a slow route must hold a thread, not a whole worker"
    assert config.workers == HOST_CPUS, "one process per CPU: Python's CPU-bound work needs processes"
    # gunicorn's settings reference: threads "generally in the 2-4 x $(NUM_CORES) range".
    assert 2 * HOST_CPUS <= config.workers * config.threads <= 4 * HOST_CPUS, (config.workers, config.threads)
    assert not config.preload_app, "each worker must build its own telemetry providers"


def test_the_app_container_shows_all_its_workers_on_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _container_env(services)
    settings = resolve_settings({}, {}, environ=env)
    assert settings.multiprocess_dir is not None, "set OTEL_FLASK_MONITOR_MULTIPROCESS_DIR for the app"
    users = re.findall(r"^USER\s+(\S+)", _dockerfile_text(), re.MULTILINE)
    assert users, "the app must not run as root"
    assert users[-1] not in ("root", "0"), users
    # `auto` resolves under tempfile.gettempdir(): /tmp in the image unless a TMPDIR says otherwise.
    # Debian's /tmp is world-writable (sticky), so the unprivileged user can create its directory there.
    assert not {"TMPDIR", "TEMP", "TMP"} & set(env), "a temp dir override must be writable by the app user"
    auto = settings.multiprocess_dir.strip().lower() == MULTIPROCESS_AUTO
    directory = PurePosixPath("/tmp" if auto else settings.multiprocess_dir)
    assert directory.is_relative_to("/tmp"), f"{directory} may not be writable by the app's user"


def test_the_collector_has_a_memory_limit_its_limiter_can_take_a_share_of(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    limiter = next(
        config
        for name, config in collector["processors"].items()
        if _component_type(name) == "memory_limiter"
    )
    service = services[COLLECTOR_SERVICE]
    limit = service.get("mem_limit") or service.get("deploy", {}).get("resources", {}).get("limits", {}).get(
        "memory"
    )
    if "limit_mib" in limiter:
        assert limiter["limit_mib"] > limiter.get("spike_limit_mib", 0)
        return
    # A percentage of the cgroup limit; without one, of the whole host (memorylimiter iruntime).
    assert limit is not None, "limit_percentage needs a container memory limit (mem_limit)"
    # A Compose Specification byte value (11-extension.md): digits and an optional b/k/m/g (+ b) unit.
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(limit).lower())
    assert match, f"{limit!r} is not a Compose byte value"
    limit_bytes = int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2]]
    soft_percentage = limiter["limit_percentage"] - limiter["spike_limit_percentage"]
    soft_limit_mib = limit_bytes * soft_percentage // 100 // 1024**2
    assert soft_limit_mib >= 128, f"{limit} leaves the Collector {soft_limit_mib} MiB before it refuses data"


def test_prometheus_scrapes_the_collectors_own_metrics(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    readers = collector["service"]["telemetry"]["metrics"]["readers"]
    (exporter,) = [reader["pull"]["exporter"]["prometheus"] for reader in readers if "pull" in reader]
    assert exporter["host"] in ("0.0.0.0", "::"), "the default localhost is unreachable from Prometheus"
    # The names the dashboard queries (COLLECTOR_EXPORTER_METRICS) carry no unit or _total suffix.
    assert exporter["without_units"] is True
    assert exporter["without_type_suffix"] is True
    prometheus = _prometheus_config(services)
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {
        target for job in jobs.values() for config in job["static_configs"] for target in config["targets"]
    }
    assert f"{COLLECTOR_SERVICE}:{exporter['port']}" in targets


def _prometheus_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    command = _command(services[PROMETHEUS_SERVICE])
    (flag,) = [argument for argument in command if argument.startswith("--config.file=")]
    path = _host_path(services[PROMETHEUS_SERVICE], flag.split("=", 1)[1])
    assert path is not None
    config: dict[str, Any] = _yaml(path)
    return config


def _emitted_prometheus_names() -> set[str]:
    """Names Prometheus gives what the app exports: the monitor's process instruments and the Flask
    instrumentation's http.server.* metrics, recorded through the real SDK and translated."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sampler = ProcessSampler(interval_seconds=3600)
    register_instruments(provider.get_meter("deployment-files"), sampler)
    app = Flask("deployment-files")
    app.get("/ping")(lambda: "pong")
    FlaskInstrumentor().instrument_app(app, meter_provider=provider)
    try:
        assert app.test_client().get("/ping").status_code == 200
        data = reader.get_metrics_data()
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        sampler.stop()
        provider.shutdown()
    assert data is not None
    names = set()
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                point_type = metric.data
                if isinstance(point_type, Histogram):
                    base = prometheus_metric_name(metric.name, metric.unit or "", "histogram")
                    names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
                    continue
                kind = "gauge"
                if isinstance(point_type, Sum):
                    kind = "counter" if point_type.is_monotonic else "updown"
                names.add(prometheus_metric_name(metric.name, metric.unit or "", kind))
    return names


def _promql_selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: value}) of every vector selector of a PromQL expression."""
    selectors = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", expr):
        matchers = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', match[2]))
        assert "__name__" not in match[2], f"{expr}: select metrics by exact name, not by a __name__ regex"
        selectors.append((match[1] or "", matchers))
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)|\"[^\"]*\"", " ", expr)
    for name in re.findall(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", bare):
        if name not in _PROMQL_KEYWORDS and all(name != selected for selected, _ in selectors):
            selectors.append((name, {}))
    return selectors


def _prometheus_targets() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus":
                    found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def test_prometheus_panels_query_metrics_the_stack_produces(services: dict[str, dict[str, Any]]) -> None:
    prometheus = _prometheus_config(services)
    otlp = prometheus["otlp"]
    assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes", "the names below assume it"
    promoted = {attribute.replace(".", "_") for attribute in otlp.get("promote_resource_attributes", [])}
    scrape_jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    known = _emitted_prometheus_names() | COLLECTOR_EXPORTER_METRICS | _recorded_names(services)
    assert {"process_cpu_utilization_ratio", "process_memory_usage_bytes"} <= known
    targets = _prometheus_targets()
    assert targets, "the dashboard has no Prometheus panels"
    for panel, expr in targets:
        for name, matchers in _promql_selectors(expr):
            assert name in known, f"{panel}: {name!r} is not a metric the stack produces ({expr})"
            for label, value in matchers.items():
                if label == "job":
                    # OTLP data's job is <service.namespace>/<service.name>: only scrape jobs are stable.
                    assert value in scrape_jobs, (
                        f"{panel}: job={value!r} is not a scrape job; use service_name"
                    )
                elif label not in {"instance", "exporter", "data_type"}:
                    assert label in promoted, f"{panel}: label {label!r} is not promoted from the resource"
            if name.startswith("otelcol_"):
                assert matchers.get("job") in scrape_jobs, f"{panel}: select the Collector's scrape job"
            else:
                assert matchers.get("service_name") == "$service", (
                    f"{panel}: select the service by service_name"
                )


def test_panel_titles_name_every_status_class_their_queries_plot() -> None:
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            plotted = {
                f"{digit}xx"
                for target in panel.get("targets", [])
                for digit in re.findall(
                    r'http_response_status_code\s*=~\s*"([1-5])\.\."', target.get("expr", "")
                )
            }
            missing = {status_class for status_class in plotted if status_class not in panel["title"]}
            assert not missing, f"{path.name}: {panel['title']!r} plots {sorted(plotted)}"


def _loki_action(attribute: str, otlp_config: dict[str, Any]) -> str:
    """What Loki 3.7 does with a resource attribute (pkg/loghttp/push/otlp_config.go): the default
    index-label rule goes first unless ignore_defaults, then the first matching rule wins."""
    resource = otlp_config.get("resource_attributes", {})
    rules = list(resource.get("attributes_config", []))
    if not resource.get("ignore_defaults", False):
        rules.insert(0, {"action": "index_label", "attributes": list(LOKI_DEFAULT_INDEX_LABELS)})
    for rule in rules:
        if attribute in rule.get("attributes", []) or (
            "regex" in rule and re.fullmatch(rule["regex"], attribute) is not None
        ):
            return str(rule.get("action", "structured_metadata"))
    return "structured_metadata"


def test_the_troubleshooting_example_moves_the_instance_id_out_of_loki_index_labels() -> None:
    text = TROUBLESHOOTING_DOC.read_text(encoding="utf-8")
    section = text.split("## High cardinality", 1)[1].split("\n## ", 1)[0]
    blocks = [
        yaml.safe_load(textwrap.dedent(block)) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)
    ]
    (otlp_config,) = [block["limits_config"]["otlp_config"] for block in blocks if "limits_config" in block]
    assert _loki_action("service.instance.id", otlp_config) == "structured_metadata"
    for attribute in LOKI_DEFAULT_INDEX_LABELS:
        if attribute != "service.instance.id":
            assert _loki_action(attribute, otlp_config) == "index_label", f"{attribute} lost its index label"
    # Without ignore_defaults the same rules would leave the instance id an index label.
    resource = otlp_config["resource_attributes"]
    with_defaults = {"resource_attributes": {**resource, "ignore_defaults": False}}
    assert _loki_action("service.instance.id", with_defaults) == "index_label"


# --- objectives: the generated rules, Alertmanager and the alert receiver (issue 13 section 4) --------

ALERTMANAGER_SERVICE: Final = "alertmanager"
ALERT_LOG_SERVICE: Final = "alert-log"
OBJECTIVE_RULES: Final = REPO / "deploy" / "prometheus" / "rules" / "shop-objectives.rules.yml"
ALERT_LOG_SCRIPT: Final = REPO / "deploy" / "alertmanager" / "alert_log.py"


def _rule_files(services: dict[str, dict[str, Any]]) -> list[Path]:
    """The host files behind the container paths and globs of prometheus.yml's rule_files."""
    found = []
    for pattern in _prometheus_config(services).get("rule_files", []):
        directory = _host_path(services[PROMETHEUS_SERVICE], str(PurePosixPath(pattern).parent))
        assert directory is not None, f"rule_files {pattern} is not under a mount of the Prometheus service"
        found += sorted(directory.glob(PurePosixPath(pattern).name))
    return found


def _recorded_names(services: dict[str, dict[str, Any]]) -> set[str]:
    return {
        rule["record"]
        for path in _rule_files(services)
        for group in _yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def _alertmanager_config(services: dict[str, dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    command = _command(services[ALERTMANAGER_SERVICE])
    (flag,) = [argument for argument in command if argument.startswith("--config.file=")]
    path = _host_path(services[ALERTMANAGER_SERVICE], flag.split("=", 1)[1])
    assert path is not None
    config: dict[str, Any] = _yaml(path)
    return path, config


def test_prometheus_loads_the_objective_rules_and_alerts_alertmanager(
    services: dict[str, dict[str, Any]],
) -> None:
    from tests.support import promtool

    assert _rule_files(services) == [OBJECTIVE_RULES]
    promtool.check_rules(OBJECTIVE_RULES)
    (alertmanagers,) = _prometheus_config(services)["alerting"]["alertmanagers"]
    (target,) = [target for config in alertmanagers["static_configs"] for target in config["targets"]]
    host, _, port = target.partition(":")
    assert host == ALERTMANAGER_SERVICE
    assert host in services
    assert int(port) in _published_container_ports(services[ALERTMANAGER_SERVICE]) | {9093}
    assert alertmanagers.get("api_version", "v2") == "v2", "Alertmanager 0.27 dropped the v1 API"


def test_the_committed_objective_rules_are_what_the_demo_declares(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_flask_monitor.cli import main

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    header = OBJECTIVE_RULES.read_text(encoding="utf-8").splitlines()[1]
    arguments = shlex.split(header.removeprefix("# Generated by: "))
    assert arguments[:4] == ["python", "-m", "otel_flask_monitor", "rules"], header
    assert arguments[arguments.index("--app") + 1] == DEMO_APP_TARGET
    status = main([*arguments[3:], "--check", str(OBJECTIVE_RULES)])
    assert status == 0, f"regenerate it with `make rules`:\n{capsys.readouterr().out}"
    # The service the rules select is the one the app container exports as.
    service = arguments[arguments.index("--service-name") + 1]
    assert _container_env(services)["OTEL_SERVICE_NAME"] == service
    assert f'service_name="{service}"' in OBJECTIVE_RULES.read_text(encoding="utf-8")


def test_alertmanager_config_is_valid_and_groups_what_the_alerts_carry(
    services: dict[str, dict[str, Any]],
) -> None:
    import shutil
    import subprocess

    path, config = _alertmanager_config(services)
    amtool = shutil.which("amtool")
    assert amtool is not None, (
        "amtool not found: install Debian's prometheus-alertmanager package (.ci/run does)"
    )
    result = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every label it groups and inhibits on is one the objectives' alerts carry.
    alert_labels = {"alertname", "severity"}
    for group in _yaml(OBJECTIVE_RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                alert_labels |= set(rule["labels"])
                alert_labels |= set(re.findall(r"(\w+)=~?\"", rule["expr"])) - {"outcome"}
    assert set(config["route"]["group_by"]) <= alert_labels
    for inhibit in config["inhibit_rules"]:
        assert set(inhibit["equal"]) <= alert_labels
    # The receiver is the alert-log service, on the port its command listens on.
    (receiver,) = config["receivers"]
    (webhook,) = receiver["webhook_configs"]
    host, port, path_part = _url(webhook["url"])
    assert host == ALERT_LOG_SERVICE
    command = _command(services[ALERT_LOG_SERVICE])
    assert port == int(command[command.index("--port") + 1])
    assert path_part == "/alerts"
    assert _host_path(services[ALERT_LOG_SERVICE], command[1]) == ALERT_LOG_SCRIPT


def test_the_alert_log_receiver_writes_one_line_per_alert() -> None:
    import subprocess
    import sys
    import time

    import requests

    from tests.support.real_processes import free_port, stop_process

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ALERT_LOG_SCRIPT), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Alertmanager's webhook message, version 4 (prometheus/alertmanager v0.33.1 notify/webhook).
        message = {
            "version": "4",
            "status": "firing",
            "receiver": "alert-log",
            "groupKey": "{}:{}",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "ObjectiveBudgetBurn",
                        "severity": "page",
                        "service_name": "shop",
                        "http_request_method": "POST",
                        "http_route": "/api/products/<int:product_id>/purchase",
                        "objective": "availability",
                    },
                    "annotations": {"summary": "burning"},
                    "startsAt": "2026-01-01T00:00:00Z",
                }
            ],
        }
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.post(f"http://127.0.0.1:{port}/alerts", json=message, timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, "the alert log exited before listening"
                assert time.monotonic() < deadline, "the alert log never listened"
                time.sleep(0.05)
        assert response.status_code == 200
        garbage = requests.post(f"http://127.0.0.1:{port}/alerts", data=b"{not json", timeout=5)
        assert garbage.status_code == 400
    finally:
        stop_process(process)
        output, _ = process.communicate(timeout=10)  # reads and closes both pipes
    lines = output.splitlines()
    assert lines == [
        "FIRING page ObjectiveBudgetBurn shop POST /api/products/<int:product_id>/purchase availability: "
        "burning (since 2026-01-01T00:00:00Z)"
    ]


def test_the_dashboard_has_an_objectives_row_on_the_generated_series() -> None:
    dashboard = json.loads(
        (REPO / "deploy" / "grafana" / "dashboards" / "otel-flask-monitor.json").read_text()
    )
    panels = dashboard["panels"]
    (row,) = [panel for panel in panels if panel["type"] == "row" and panel["title"].startswith("Objectives")]
    below = [panel for panel in panels if panel["gridPos"]["y"] > row["gridPos"]["y"]]
    recorded = {
        rule["record"]
        for group in _yaml(OBJECTIVE_RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    queried = {
        name
        for panel in below
        for target in panel["targets"]
        for name, _ in _promql_selectors(target["expr"])
    }
    assert queried <= recorded
    # Attained ratio, budget left (against the target series) and burn rates over the alerts' windows.
    assert "otel_flask_monitor:objective_errors:ratio_rate30d" in queried
    assert "otel_flask_monitor:objective_target:ratio" in queried
    assert {
        f"otel_flask_monitor:objective_errors:ratio_rate{window}" for window in ("1h", "6h", "1d", "3d")
    } <= queried


def test_the_app_links_trace_ids_to_the_trace_in_the_stacks_grafana(
    services: dict[str, dict[str, Any]],
) -> None:
    template = resolve_settings({}, {}, environ=_container_env(services)).trace_url_template
    assert template is not None, "set OTEL_FLASK_MONITOR_TRACE_URL_TEMPLATE for the app"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    link = urlsplit(template.replace("{trace_id}", trace_id))
    # Opened by the browser on the host: Grafana's published port, on loopback as compose binds it.
    published = {port.rsplit(":", 2)[-2] for port in services["grafana"]["ports"] if port.endswith(":3000")}
    assert link.hostname == "localhost"
    assert str(link.port) in published, (link.netloc, published)
    assert link.path == "/explore"
    query = parse_qs(link.query, strict_parsing=True)
    assert query["schemaVersion"] == ["1"]
    assert query["orgId"] == ["1"]
    (panes,) = query["panes"]
    (pane,) = json.loads(panes).values()
    tempo_uids = {d["uid"] for d in _datasources() if d["type"] == "tempo"}
    assert pane["datasource"] in tempo_uids
    (trace_query,) = pane["queries"]
    assert trace_query["datasource"] == {"type": "tempo", "uid": pane["datasource"]}
    assert trace_query["query"] == trace_id, "the id must land in the query, decoded"
