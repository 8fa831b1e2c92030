"""The GPU image and its compose files, checked statically: no Docker engine runs in CI, so this is what stands
between a typo and a failed deploy. Parsed, every image pinned, a non-root user, a readiness healthcheck, the
Triton ports, and a perf_analyzer that load-tests the server service."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE_FILES = ("compose.yaml", "monitoring.compose.yaml")
TRITON_PORTS = {8000, 8001, 8002}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):                       # a comment inside a continued instruction
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = current.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    assert not current, f"unterminated instruction: {current}"
    return instructions


def is_pinned(image: str) -> bool:
    """name:tag or name@sha256:digest, where the tag is not `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions((DOCKER / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_the_parser_joins_continuations_and_skips_comments():
    parsed = dockerfile_instructions("# c\nFROM a:1\nRUN x \\\n  # inner\n  && y\nUSER u\n")
    assert parsed == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "u")]


@pytest.mark.parametrize("image, pinned", [("nvcr.io/nvidia/tritonserver:24.10-py3", True), ("ubuntu", False),
                                           ("ubuntu:latest", False), ("localhost:5000/app", False),
                                           ("app@sha256:abc", True), ("localhost:5000/app:1.2", True)])
def test_is_pinned(image, pinned):
    assert is_pinned(image) is pinned


def test_base_image_is_a_pinned_ngc_triton_release(instructions):
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases and all(is_pinned(b) for b in bases), bases
    assert bases[-1].startswith("nvcr.io/nvidia/tritonserver:")


def test_pip_installs_pin_torch(instructions):
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(r"torch==[\d.]+", runs), "the image's torch version is pinned"


def test_runs_as_a_non_root_user_before_its_entrypoint(instructions):
    keywords = [k for k, _ in instructions]
    users = [(i, args.strip()) for i, (k, args) in enumerate(instructions) if k == "USER"]
    assert users, "no USER: the server would run as root"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    starts = [i for i, k in enumerate(keywords) if k in ("CMD", "ENTRYPOINT")]
    assert starts and all(last_index < i for i in starts), "USER must come before CMD/ENTRYPOINT"
    created = " ".join(args for k, args in instructions[:last_index] if k == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(last_user)}\b", created), f"user {last_user} is never created"


def test_healthcheck_probes_readiness(instructions):
    checks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "CMD" in checks[0] and "/v2/health/ready" in checks[0] and ":8000" in checks[0]


def test_exposes_the_triton_ports(instructions):
    exposed = {int(port.split("/")[0]) for keyword, args in instructions if keyword == "EXPOSE"
               for port in args.split()}
    assert TRITON_PORTS <= exposed


def test_entrypoint_exports_when_no_repository_is_built(instructions):
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert "mini-vlm-entrypoint" in entrypoint
    script = (DOCKER / "entrypoint.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
    assert "built_from_this_template" in script and "vlm export" in script and "--device gpu" in script
    assert "exec python3 -m minivlm.server.secret_argv tritonserver" in script
    assert "--strict-readiness=true" in script
    copied = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(args.startswith("docker/entrypoint.sh ") for args in copied)


def test_the_admin_key_never_reaches_a_command_line():
    """Any user of the host reads a container process's /proc/PID/cmdline: the key goes through secret_argv,
    whose library the image compiles as the server's user."""
    script = (DOCKER / "entrypoint.sh").read_text()
    assert "$ADMIN_KEY" not in script.replace("${ADMIN_KEY:-}", "") and "ADMIN_KEY_FILE" in script
    dockerfile = (DOCKER / "Dockerfile").read_text()
    user = dockerfile.index("USER vlm")
    assert dockerfile.index("secret_argv_library()") > user and "gcc" in dockerfile[:user]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_compose_image_is_pinned(name):
    services = yaml.safe_load((DOCKER / name).read_text())["services"]
    for service_name, service in services.items():
        assert "image" in service, f"{name}: {service_name} names no image"
        assert is_pinned(service["image"]), f"{name}: {service_name} image {service['image']} is not pinned"


def test_compose_builds_the_server_from_the_dockerfile_with_a_gpu(compose):
    server = compose["services"]["tritonserver"]
    assert (DOCKER / server["build"]["context"] / server["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    published = {int(str(p).split(":")[-1].split("/")[0]) for p in server["ports"]}
    assert TRITON_PORTS <= published
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert any(v.endswith(":/checkpoint:ro") for v in server["volumes"])


def test_compose_perf_analyzer_load_tests_the_server_service(compose):
    services = compose["services"]
    (perf,) = [s for n, s in services.items() if n != "tritonserver"]
    assert perf["image"].startswith("nvcr.io/nvidia/tritonserver:") and perf["image"].endswith("-sdk")
    base = dockerfile_instructions((DOCKER / "Dockerfile").read_text())[0][1]
    assert perf["image"].removesuffix("-sdk") == base, "the SDK and the server come from one NGC release"
    assert perf["depends_on"]["tritonserver"]["condition"] == "service_healthy"
    command = perf["command"] if isinstance(perf["command"], list) else shlex.split(perf["command"])
    assert command[0] == "perf_analyzer"
    url = command[command.index("-u") + 1]
    assert url == "tritonserver:8001" and command[command.index("-i") + 1] == "grpc"
    inputs = command[command.index("--input-data") + 1]
    assert any(inputs.startswith(v.split(":")[1] + "/") for v in perf["volumes"]), "input data is not mounted"
