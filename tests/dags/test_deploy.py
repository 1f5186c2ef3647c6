"""Deployment files (docker/, infra/): parsed and checked against the repository, no engine.

No Docker engine, Kubernetes cluster or provider download is available here, so these tests
check what can be checked without one:

* the compose files against the Compose Specification (compose-spec), the Dockerfiles with
  BuildKit's own parser (`dockerfile`), every repository path they reference, the build-context
  filter (docker's .dockerignore matcher), secrets only as placeholders;
* every command our containers run: `airflow ...` through Airflow's own CLI parser,
  `creative-factory ...` through the project's Typer/Click app, Spark's main classes in the
  pyspark jars, healthcheck URLs against Airflow's API routes;
* every `CF__SECTION__KEY` and overlay file through `jobs.platform.config.load_config`, every
  `AIRFLOW__SECTION__KEY` / chart `config:` key against Airflow's configuration reference;
* the Helm values: KubernetesExecutor, and the GPU pod of a `gpu` pool task built by the
  provider's own PodGenerator from the cluster policy;
* Terraform: `terraform fmt -check`, and the IAM policies rendered by `terraform console` and
  enforced by moto's IAM (allowed and denied S3 calls).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from jobs.platform.config import REPO_ROOT, load_config
from jobs.platform.errors import UserError

DOCKER = REPO_ROOT / "docker"
INFRA = REPO_ROOT / "infra"
TERRAFORM = INFRA / "terraform"
COMPOSE_FILES = [DOCKER / "compose.yaml", DOCKER / "compose.gpu.yaml"]
DOCKERFILES = [DOCKER / "airflow.Dockerfile", DOCKER / "gpu-worker.Dockerfile"]
PROJECT_HOME = "/opt/creative-factory"  # WORKDIR of both images: jobs/platform/config.py's REPO_ROOT there
# Tracked top-level entries an image does not need at run time; every other one must be copied
# (jobs/platform/config.py resolves config, SQL and lexicons beside jobs/).
NOT_IN_IMAGE = {".ci", ".gitignore", "Makefile", "docs", "tests", "docker", "infra"}
SERVICES = {"postgres", "minio", "minio-init", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "spark-master", "spark-worker"}
# Commands of third-party images (postgres, minio, mc): not the repository's to check.
THIRD_PARTY_COMMANDS = {"pg_isready", "mc", "server"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "!", "exec"}


# ---------------------------------------------------------------------------------- helpers

def env_example() -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(DOCKER / ".env.example").items() if v is not None}


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]+)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group("braced") or m.group("plain")
        name, op, arg = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?(.*)", expr).groups()
        value = env.get(name)
        if op in (":-", "-"):
            return value if (value if op == ":-" else value is not None) else arg
        if op in (":?", "?") and not value:
            raise AssertionError(f"compose would stop: {name} unset ({arg})")
        if value is None:
            raise AssertionError(f"${{{name}}} has no default and is not in .env.example")
        return value

    return _VAR.sub(sub, text)


def interpolate_tree(node, env):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


@functools.cache
def compose(path: Path) -> dict:
    """A compose file as compose sees it: YAML (anchors, merge keys), then interpolation."""
    return interpolate_tree(yaml.safe_load(path.read_text()), env_example())


def as_mapping(environment) -> dict[str, str]:
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in (environment or {}).items()}


def merged_services() -> dict[str, dict]:
    """compose.yaml with compose.gpu.yaml on top (mappings merge, the override's scalars win)."""
    services = {name: dict(svc) for name, svc in compose(COMPOSE_FILES[0])["services"].items()}
    for name, override in compose(COMPOSE_FILES[1])["services"].items():
        base = services.setdefault(name, {})
        for key, value in override.items():
            if key == "environment":
                base[key] = {**as_mapping(base.get(key)), **as_mapping(value)}
            else:
                base[key] = value
    return services


def our_image(service: dict) -> bool:
    """Built from this repository (its commands are ours to check)."""
    return "build" in service or "creative-factory" in str(service.get("image", ""))


def split_shell(script: str) -> list[list[str]]:
    """Simple commands of a POSIX shell string (operators ; && || | and keywords split)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|()"):
            commands.append(current)
            current = []
        elif not current and token in SHELL_KEYWORDS:
            continue
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def service_commands(service: dict) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command a service runs: entrypoint/command and healthcheck."""
    found = []
    run = list(service.get("entrypoint") or []) + list(service.get("command") or [])
    if isinstance(service.get("command"), str):
        run = shlex.split(service["command"])
    if run[:2] in (["bash", "-c"], ["/bin/sh", "-c"], ["sh", "-c"]):
        found += [("command", argv) for argv in split_shell(" ".join(run[2:]))]
    elif run:
        found.append(("command", run))
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test[0] == "CMD":
        found.append(("healthcheck", test[1:]))
    elif isinstance(test, list) and test[0] == "CMD-SHELL":
        found += [("healthcheck", argv) for argv in split_shell(test[1])]
    elif isinstance(test, str):
        found += [("healthcheck", argv) for argv in split_shell(test)]
    return found


@functools.cache
def airflow_parser():
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


@functools.cache
def airflow_api_paths() -> frozenset[str]:
    from airflow.api_fastapi.core_api.routes.public import public_router

    return frozenset(r.path for r in public_router.routes)


def check_airflow(argv: list[str]) -> None:
    try:
        airflow_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`airflow {' '.join(argv)}` is not a valid Airflow command") from exc


def check_creative_factory(argv: list[str]) -> None:
    """Resolve the subcommand chain and parse its options with Click (nothing runs)."""
    import typer.main

    # Typer 0.29 carries its own copy of Click (typer._click); groups are the commands
    # that resolve subcommands.
    from typer._click.exceptions import UsageError

    from jobs.entrypoints.cli import app

    command = typer.main.get_command(app)
    ctx, args = None, list(argv)
    name = "creative-factory"
    while True:
        try:
            ctx = command.make_context(name, list(args), parent=ctx, resilient_parsing=False)
        except UsageError as exc:
            raise AssertionError(f"`creative-factory {' '.join(argv)}`: {exc}") from None
        if not hasattr(command, "get_command"):
            return
        rest = ctx._protected_args + ctx.args
        assert rest, f"`creative-factory {' '.join(argv)}` names no subcommand"
        name, args = rest[0], rest[1:]
        command = command.get_command(ctx, name)
        assert command is not None, f"`creative-factory {' '.join(argv)}`: no command {name!r}"


def check_spark_class(argv: list[str]) -> None:
    import pyspark

    assert shutil.which("spark-class", path=str(Path(sys.executable).parent)), \
        "spark-class is not installed beside the interpreter (pyspark's scripts)"
    main_class = argv[1].replace(".", "/") + ".class"
    jars = Path(pyspark.__file__).parent / "jars"
    core = [j for j in jars.glob("spark-core_*.jar")]
    assert core, f"no spark-core jar under {jars}"
    with zipfile.ZipFile(core[0]) as jar:
        assert main_class in jar.namelist(), f"{argv[1]} is not in {core[0].name}"


def check_command(where: str, argv: list[str], service: str) -> None:
    program = argv[0]
    if program == "airflow":
        check_airflow(argv[1:])
    elif program == "creative-factory":
        check_creative_factory(argv[1:])
    elif program == "spark-class":
        check_spark_class(argv)
    elif program == "curl":
        url = next(a for a in argv[1:] if a.startswith("http"))
        port, path = re.match(r"http://localhost:(\d+)(/\S*)", url).groups()
        if service == "airflow-apiserver":
            assert path in airflow_api_paths(), f"{service}: {path} is not an Airflow API route"
        elif service == "airflow-scheduler":
            from airflow.configuration import conf

            assert path == "/health"
            assert int(port) == conf.getint("scheduler", "scheduler_health_check_server_port")
        else:
            assert service.startswith("spark-") and path == "/json/", (service, url)
    elif program == "[":
        assert argv[-1] == "]", argv
    else:
        raise AssertionError(f"{service} {where}: unknown command {program!r} (add a check)")


def check_airflow_config_key(section: str, key: str) -> None:
    from airflow.configuration import conf

    options = conf.configuration_description.get(section, {}).get("options", {})
    assert key in options, f"[{section}] {key} is not an Airflow configuration option"


def check_cf_env(env: dict[str, str], overlay: Path | None):
    """load_config with exactly this environment; every CF__ variable lands where it says."""
    environ = {k: v for k, v in env.items() if k.startswith("CF__")}
    if overlay is not None:
        environ["CREATIVE_FACTORY_CONFIG"] = str(overlay)
    try:
        cfg = load_config(environ=environ)
    except UserError as exc:
        raise AssertionError(f"config rejected: {exc}") from None
    tree = cfg.as_dict()
    for name, raw in environ.items():
        if not name.startswith("CF__"):
            continue
        parts = name[len("CF__"):].lower().split("__")
        if parts[:2] == ["spark", "extra_conf"]:
            parts = parts[:2] + [".".join(parts[2:])]
        node = tree
        for part in parts:
            assert isinstance(node, dict) and part in node, f"{name}: no config key {parts}"
            node = node[part]
        expected = yaml.safe_load(raw)
        assert node == expected or str(node) == str(expected), (name, node, raw)
    return cfg


def dockerfile_instructions(path: Path):
    import dockerfile

    return dockerfile.parse_file(str(path))


# ---------------------------------------------------------------------------- compose stack

def test_compose_files_follow_the_compose_spec():
    from compose_spec import PyCompose

    for path in COMPOSE_FILES:
        try:
            PyCompose.from_json(json.dumps(compose(path)))
        except ValueError as exc:
            raise AssertionError(f"{path.name}: {exc}") from None
    assert SERVICES <= set(compose(COMPOSE_FILES[0])["services"])


def test_secrets_are_placeholders_and_the_env_file_is_ignored():
    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict | list):
            for v in node.values() if isinstance(node, dict) else node:
                yield from strings(v)

    text = "\n".join(s for p in COMPOSE_FILES for s in strings(yaml.safe_load(p.read_text())))
    env = env_example()
    for name in sorted(set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?\?)[^}]*\}", text))):
        assert name in env, f"{name} is required by compose but missing from .env.example"
    for name, value in env.items():
        if re.search(r"PASSWORD|SECRET|FERNET", name):
            assert value == "CHANGE-ME", f".env.example must not hold a real {name}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "docker/.env (real secrets) must be git-ignored"


def test_compose_paths_exist():
    for path in COMPOSE_FILES:
        data = compose(path)
        declared = set(data.get("volumes") or {})
        for name, svc in data["services"].items():
            if "build" in svc:
                context = (path.parent / svc["build"]["context"]).resolve()
                assert context == REPO_ROOT, f"{name}: build context must be the repository root"
                assert (context / svc["build"]["dockerfile"]).is_file(), name
            for volume in svc.get("volumes") or []:
                source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
                if source.startswith((".", "/")):
                    assert (path.parent / source).exists(), f"{name}: bind source {source} missing"
                else:
                    assert source in declared, f"{name}: named volume {source} not declared"


def test_long_running_services_have_healthchecks():
    services = merged_services()
    one_shot = {dep for svc in services.values() for dep, cond in
                (svc.get("depends_on") or {}).items()
                if cond.get("condition") == "service_completed_successfully"}
    assert one_shot == {"airflow-init", "minio-init"}
    for name, svc in services.items():
        if name in one_shot:
            assert svc.get("restart") == "no", f"{name} is a one-shot job"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"] and not svc["healthcheck"].get("disable"), \
            f"{name} runs for good and needs a healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") == "service_healthy":
                assert (services[dep].get("healthcheck") or {}).get("test"), (name, dep)


def test_every_command_the_containers_run_exists():
    checked = set()
    for name, svc in merged_services().items():
        for where, argv in service_commands(svc):
            if not our_image(svc):
                assert argv[0] in THIRD_PARTY_COMMANDS | {"/bin/sh"} or argv[0] == "mc", argv
                continue
            check_command(where, argv, name)
            checked.add(" ".join(argv[:2]))
    # the Airflow 3 components and the one-shot setup are all there
    for expected in ("airflow api-server", "airflow scheduler", "airflow dag-processor",
                     "airflow triggerer", "airflow db", "airflow pools",
                     "creative-factory sample-data", "spark-class org.apache.spark.deploy.master.Master",
                     "spark-class org.apache.spark.deploy.worker.Worker"):
        assert expected in checked, f"no service runs `{expected}`"


def test_a_wrong_command_is_caught():
    with pytest.raises(AssertionError):
        check_airflow(["webserver"])  # Airflow 2's component, gone in 3
    with pytest.raises(AssertionError):
        check_creative_factory(["sample-data", "--no-such-option", "1"])
    with pytest.raises(AssertionError):
        check_creative_factory(["no-such-command"])


def test_environment_maps_to_real_config_keys():
    services = merged_services()
    for name, svc in services.items():
        if not our_image(svc):
            continue
        env = as_mapping(svc.get("environment"))
        for key in env:
            if key.startswith("AIRFLOW__"):
                section, option = key[len("AIRFLOW__"):].lower().split("__", 1)
                check_airflow_config_key(section, option)
        overlay = None
        if "CREATIVE_FACTORY_CONFIG" in env:
            mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes") or []}
            source = mounts.get(env["CREATIVE_FACTORY_CONFIG"])
            assert source, f"{name}: CREATIVE_FACTORY_CONFIG points at an unmounted path"
            overlay = (DOCKER / source).resolve()
        cfg = check_cf_env(env, overlay)
        if name == "airflow-scheduler":
            # the stack's own wiring: Spark master, MinIO, bucket made by minio-init
            assert cfg.spark.master == "spark://spark-master:7077"
            assert cfg.spark.extra_conf["spark.driver.host"] == svc["hostname"]
            assert cfg.library.endpoint_url == "http://minio:9000"
            assert cfg.library.bucket == services["minio-init"]["environment"]["BUCKET"]
            assert cfg.generate.vllm.gpu_memory_utilization > 0.5  # compose.gpu.yaml applied
    with pytest.raises(AssertionError, match="config rejected"):
        check_cf_env({"CF__LIBRARY__NO_SUCH_KEY": "1"}, None)


# ------------------------------------------------------------------------------- Dockerfiles

def test_dockerfiles_parse_and_copy_what_the_project_needs():
    from docker.utils.build import PatternMatcher

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    runtime = {p.split("/")[0] for p in tracked} - NOT_IN_IMAGE
    for path in DOCKERFILES:
        cmds = dockerfile_instructions(path)
        assert cmds[0].cmd == "FROM" or cmds[0].cmd == "ARG"
        ignore = path.with_name(path.name + ".dockerignore")
        patterns = [ln.strip() for ln in ignore.read_text().splitlines()
                    if ln.strip() and not ln.startswith("#")]
        workdirs = [c.value[0] for c in cmds if c.cmd == "WORKDIR"]
        assert workdirs == [PROJECT_HOME], f"{path.name}: the project lives in {PROJECT_HOME}"
        copied = set()
        for c in cmds:
            if c.cmd not in ("COPY", "ADD"):
                continue
            assert not any(f.startswith("--from") for f in c.flags), "copy from the context only"
            *sources, dest = c.value
            assert not dest.startswith("/"), f"{path.name}: {c.original} must land in WORKDIR"
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{path.name}: COPY source {source} missing"
                assert not PatternMatcher(patterns).matches(source), \
                    f"{path.name}: {source} is excluded by {ignore.name}"
                copied.add(source.split("/")[0])
        missing = runtime - copied
        assert not missing, f"{path.name} does not copy {sorted(missing)} (jobs/ reads them)"
        install = " ".join(c.original for c in cmds if c.cmd == "RUN" and "pip install" in c.original)
        assert "-e '.[" in install and "constraints" in install and "requirements-deploy" in install


def test_deploy_requirements_agree_with_constraints():
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                out[re.sub(r"[-_.]+", "-", name).lower()] = version
        return out

    deploy, constraints = pins(DOCKER / "requirements-deploy.txt"), pins(REPO_ROOT / "constraints.txt")
    clashes = {n: (v, constraints[n]) for n, v in deploy.items() if constraints.get(n, v) != v}
    assert not clashes, f"requirements-deploy.txt and constraints.txt disagree: {clashes}"


# ------------------------------------------------------------------------------------- Helm

@functools.cache
def helm_values() -> dict:
    return yaml.safe_load((INFRA / "helm" / "values.yaml").read_text())


def load_local_settings():
    spec = importlib.util.spec_from_file_location(
        "cf_airflow_local_settings", INFRA / "helm" / "airflow_local_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_helm_values_use_the_kubernetes_executor_and_real_settings():
    values = helm_values()
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == __import__("airflow").__version__
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    assert values["logs"]["persistence"]["enabled"] is True
    assert values["airflowLocalSettings"] == \
        (INFRA / "helm" / "airflow_local_settings.py").read_text().rstrip("\n")
    for section, options in values["config"].items():
        for option in options:
            check_airflow_config_key(section, option)
    for argv in split_shell(" ".join(values["migrateDatabaseJob"]["args"][2:])):
        check_command("migrateDatabaseJob", argv, "migrate")
    assert ["airflow", "pools", "set", "gpu"] == \
        split_shell(values["migrateDatabaseJob"]["args"][2])[1][:4]
    env = {e["name"]: e["value"] for e in values["env"]}
    mount = next(m for m in values["volumeMounts"] if m["name"] == "creative-factory-config")
    assert Path(env["CREATIVE_FACTORY_CONFIG"]).parent == Path(mount["mountPath"])
    extra = yaml.safe_load(values["extraEnv"])
    env.update({e["name"]: "10.0.0.7" for e in extra})  # a pod IP from the downward API
    cfg = check_cf_env(env, INFRA / "creative-factory.k8s.yaml")
    assert cfg.spark.master.startswith("k8s://")
    image = values["images"]["airflow"]
    assert cfg.spark.extra_conf["spark.kubernetes.container.image"] == \
        f"{image['repository']}:{image['tag']}"


def test_gpu_pool_tasks_get_a_gpu_pod_and_others_do_not(monkeypatch):
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from kubernetes.client import models as k8s

    env = {e["name"]: e["value"] for e in helm_values()["env"] if e["name"].startswith("CF_GPU")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    policy = load_local_settings()
    with DAG("policy_probe", schedule=None):
        gpu_task = EmptyOperator(task_id="generate_shard", pool="gpu")
        cpu_task = EmptyOperator(task_id="extract_features")
    policy.task_policy(gpu_task)
    policy.task_policy(cpu_task)
    assert "pod_override" not in (cpu_task.executor_config or {})

    worker_image = "registry.example.com/creative-factory-airflow:0.1.0"
    base = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(
        name="base", image=worker_image,
        resources=k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "8Gi"}))]))

    def pod_for(task):
        return PodGenerator.construct_pod(
            dag_id="creative_factory_cycle", task_id=task.task_id, pod_id="probe",
            try_number=1, kube_image=worker_image, date=None, args=["run"],
            pod_override_object=(task.executor_config or {}).get("pod_override"),
            base_worker_pod=base, namespace="creative-factory", scheduler_job_id="1")

    gpu_pod, cpu_pod = pod_for(gpu_task), pod_for(cpu_task)
    container = gpu_pod.spec.containers[0]
    assert container.image == env["CF_GPU_IMAGE"]
    assert container.resources.limits["nvidia.com/gpu"] == env["CF_GPU_COUNT"]
    assert container.resources.requests["memory"] == env["CF_GPU_MEMORY"]
    assert gpu_pod.spec.node_selector == dict([env["CF_GPU_NODE_SELECTOR"].split("=")])
    assert [(t.key, t.effect) for t in gpu_pod.spec.tolerations] == \
        [(env["CF_GPU_TOLERATIONS"], "NoSchedule")]
    assert cpu_pod.spec.containers[0].image == worker_image
    assert "nvidia.com/gpu" not in (cpu_pod.spec.containers[0].resources.limits or {})
    assert not cpu_pod.spec.node_selector and not cpu_pod.spec.tolerations

    # a task with its own pod_override keeps it
    own = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="x")]))
    with DAG("policy_probe_2", schedule=None):
        custom = EmptyOperator(task_id="custom", pool="gpu",
                               executor_config={"pod_override": own})
    policy.task_policy(custom)
    assert custom.executor_config["pod_override"] is own


def test_spark_on_kubernetes_wiring_is_consistent():
    values = helm_values()
    docs = list(yaml.safe_load_all((INFRA / "spark" / "rbac.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Role", "RoleBinding", "PersistentVolumeClaim"} <= set(kinds)
    pod_rule = next(r for r in kinds["Role"]["rules"] if "pods" in r["resources"])
    assert {"create", "delete", "watch"} <= set(pod_rule["verbs"])
    assert kinds["RoleBinding"]["subjects"][0]["name"] == values["workers"]["serviceAccount"]["name"]
    overlay = yaml.safe_load((INFRA / "creative-factory.k8s.yaml").read_text())
    conf = overlay["spark"]["extra_conf"]
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == \
        values["workers"]["serviceAccount"]["name"]
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert conf["spark.kubernetes.executor.volumes.persistentVolumeClaim.cf-var.options.claimName"] == claim
    volume = next(v for v in values["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    mount = next(m for m in values["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == \
        conf["spark.kubernetes.executor.volumes.persistentVolumeClaim.cf-var.mount.path"] == \
        f"{PROJECT_HOME}/var"


# --------------------------------------------------------------------------------- Terraform

def terraform() -> str:
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip("terraform is not installed (the check needs the binary, not providers)")
    return exe


def test_terraform_is_formatted():
    result = subprocess.run([terraform(), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"terraform fmt -check failed:\n{result.stdout}"


BUCKET, PREFIX = "cf-library-test", "creative-factory"


def render_policy(name: str) -> dict:
    """The policy exactly as Terraform's templatefile() renders it (no providers needed)."""
    expr = (f'base64encode(templatefile("{TERRAFORM / "policies" / name}", '
            f'{{bucket_arn = "arn:aws:s3:::{BUCKET}", prefix = "{PREFIX}"}}))')
    result = subprocess.run([terraform(), "console"], input=expr, capture_output=True,
                            text=True, timeout=60, cwd=TERRAFORM / "policies")
    assert result.returncode == 0, result.stderr
    return json.loads(base64.b64decode(result.stdout.strip().strip('"')))


def test_terraform_passes_the_templates_what_they_use():
    text = (TERRAFORM / "iam.tf").read_text()
    for name in ("library-writer.json.tftpl", "library-reader.json.tftpl"):
        used = set(re.findall(r"\$\{(\w+)\}", (TERRAFORM / "policies" / name).read_text()))
        call = re.search(re.escape(name) + r'",\s*\{(.*?)\}\)', text, re.S)
        assert call, f"iam.tf does not render {name}"
        assert used == set(re.findall(r"(\w+)\s*=", call.group(1))), name


def test_iam_policies_are_least_privilege():
    writer, reader = render_policy("library-writer.json.tftpl"), render_policy("library-reader.json.tftpl")
    bucket_arn = f"arn:aws:s3:::{BUCKET}"

    def statements(policy):
        for st in policy["Statement"]:
            assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            yield set(actions), resources, st.get("Condition")

    def check_listing(resources, condition):
        assert resources == [bucket_arn]
        assert condition and set(condition) == {"StringLike"}
        assert all(p.startswith(f"{PREFIX}/") for p in condition["StringLike"]["s3:prefix"])

    actions = set()
    for acts, resources, condition in statements(writer):
        actions |= acts
        if acts == {"s3:ListBucket"}:
            check_listing(resources, condition)
        else:
            assert resources == [f"{bucket_arn}/{PREFIX}/*"]
    assert actions == {"s3:ListBucket", "s3:PutObject", "s3:GetObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload"}
    actions = set()
    for acts, resources, condition in statements(reader):
        actions |= acts
        if acts == {"s3:ListBucket"}:
            check_listing(resources, condition)
        else:
            assert acts == {"s3:GetObject"}
            assert sorted(resources) == [f"{bucket_arn}/{PREFIX}/LATEST",
                                         f"{bucket_arn}/{PREFIX}/versions/*"]
    assert actions == {"s3:ListBucket", "s3:GetObject"}


def test_iam_policies_enforced_by_moto(monkeypatch):
    """Object calls through moto's IAM enforcement with the rendered policies. (moto does not
    evaluate the s3:prefix condition of ListBucket; the test above checks that statement.)"""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws
    from moto.core import set_initial_no_auth_action_count

    writer, reader = render_policy("library-writer.json.tftpl"), render_policy("library-reader.json.tftpl")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    setup_calls = 12  # unauthenticated admin calls below; every later call is checked by IAM

    @mock_aws
    @set_initial_no_auth_action_count(setup_calls)
    def scenario():
        region = "us-east-1"
        admin_s3 = boto3.client("s3", region_name=region)
        iam = boto3.client("iam", region_name=region)
        admin_s3.create_bucket(Bucket=BUCKET)  # 1
        for key in (f"{PREFIX}/LATEST", f"{PREFIX}/versions/c1/manifest.json", "other/secret"):
            admin_s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")  # 2-4
        clients = {}
        for role, policy in (("writer", writer), ("reader", reader)):
            iam.create_user(UserName=role)  # 5, 6
            arn = iam.create_policy(PolicyName=role, PolicyDocument=json.dumps(policy))["Policy"]["Arn"]  # 7, 8
            iam.attach_user_policy(UserName=role, PolicyArn=arn)  # 9, 10
            key = iam.create_access_key(UserName=role)["AccessKey"]  # 11, 12
            clients[role] = boto3.client("s3", region_name=region,
                                         aws_access_key_id=key["AccessKeyId"],
                                         aws_secret_access_key=key["SecretAccessKey"])

        def allowed(call, **kwargs) -> bool:
            try:
                call(Bucket=BUCKET, **kwargs)
                return True
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
                return False

        w, r = clients["writer"], clients["reader"]
        assert allowed(w.put_object, Key=f"{PREFIX}/versions/c2/creatives.parquet", Body=b"1")
        assert allowed(w.put_object, Key=f"{PREFIX}/LATEST", Body=b"c2")
        assert allowed(w.get_object, Key=f"{PREFIX}/versions/c1/manifest.json")
        assert allowed(w.delete_object, Key=f"{PREFIX}/versions/c1/manifest.json")
        assert not allowed(w.put_object, Key="other/x", Body=b"1")
        assert not allowed(w.get_object, Key="other/secret")
        assert not allowed(w.delete_object, Key="other/secret")
        assert allowed(r.get_object, Key=f"{PREFIX}/LATEST")
        assert allowed(r.get_object, Key=f"{PREFIX}/versions/c2/creatives.parquet")
        assert not allowed(r.get_object, Key="other/secret")
        assert not allowed(r.put_object, Key=f"{PREFIX}/LATEST", Body=b"evil")
        assert not allowed(r.delete_object, Key=f"{PREFIX}/LATEST")
        assert not allowed(r.put_bucket_versioning,
                           VersioningConfiguration={"Status": "Suspended"})

    scenario()


# ------------------------------------------------------------------------------ make airflow

def test_make_airflow_runs_a_real_command():
    """`make airflow` -> `creative-factory airflow` (verified by hand: standalone comes up
    healthy with these DAGs and the gpu pool; too slow for the suite)."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^airflow:.*\n\t(.+)$", makefile, re.M)
    assert recipe, "Makefile has no `airflow` target"
    argv = shlex.split(recipe.group(1).replace("$${PORT:-8080}", "8080"))
    assert argv[0] == "$(BIN)/creative-factory"
    check_creative_factory(argv[1:])
