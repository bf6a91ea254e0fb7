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
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

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
