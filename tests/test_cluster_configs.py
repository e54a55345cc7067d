"""The cluster configs agree: one set of pinned versions for pyproject.toml, the launcher configs,
the image and KubeRay; the image is layered for caching and runs as a user; token auth is on."""

from __future__ import annotations

import re
from importlib import metadata

import yaml
from packaging.requirements import Requirement

from conftest import ROOT


def pins() -> dict[str, Requirement]:
    lines = (ROOT / "cluster" / "constraints.txt").read_text().splitlines()
    reqs = [Requirement(line.split(" #")[0]) for line in lines if line.strip() and not line.startswith("#")]
    return {canonical(r.name): r for r in reqs}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req}: a pin is ==VERSION"
    return spec.version


def test_every_dependency_is_pinned_inside_pyproject_ranges():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {canonical(Requirement(d).name): Requirement(d) for d in project["dependencies"]}
    locked = pins()
    assert set(deps) <= set(locked), set(deps) - set(locked)
    # A pin beyond farm's own dependencies holds a package one of them requires (torchvision for
    # open_clip: it must be the build that matches torch), never one nothing needs.
    required = {canonical(Requirement(r).name) for name in deps for r in (metadata.requires(name) or [])}
    assert set(locked) - set(deps) <= required, (set(locked) - set(deps)) - required
    for name, dep in deps.items():
        version = pinned_version(locked[name])
        assert dep.specifier.contains(version, prereleases=True), f"{name}=={version} is outside {dep.specifier}"
        # pip refuses a constraints file with extras (`pip install -c` is how nodes install farm);
        # the extras farm asks for are in pyproject, and the image asks for them beside the pins.
        assert not locked[name].extras, f"{name}: no extras in a constraints file"


def test_launcher_configs_install_the_pins_and_start_ray_with_token_auth():
    for config in (ROOT / "cluster.yaml", ROOT / "cluster" / "onprem.yaml"):
        data = yaml.safe_load(config.read_text())
        installs = [c for c in data["setup_commands"] if "pip install" in c and "farm" in c and "upgrade" not in c]
        assert installs and all("-c " in c and "cluster/constraints.txt" in c for c in installs), config
        starts = data["head_start_ray_commands"] + data["worker_start_ray_commands"]
        assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c), config
        assert any("--dashboard-host=127.0.0.1" in c for c in data["head_start_ray_commands"]), config
        assert any(target.endswith(".ray/auth_token") for target in data["file_mounts"]), config
        assert not any("request_resources" in c for c in data["setup_commands"])


def test_the_image_installs_pins_before_the_source_and_runs_as_a_user():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    position = {key: next(i for i, line in enumerate(lines) if key in line)
                for key in ("pip install --no-cache-dir -r /opt/farm/cluster/constraints.txt",
                            "STAGE_WEIGHTS=0", "COPY --chown=ray:ray farm", "USER ray")}
    order = sorted(position, key=position.get)
    assert order == list(position), order  # pins, weights, source, user: code edits keep the heavy layers
    assert "--no-deps" in next(line for line in lines if "pip install" in line and "-e /opt/farm" in line)
    # With --no-deps for farm, the pins' layer must bring every extra farm asks for.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned_layer = next(line for line in lines if "pip install" in line and "constraints.txt" in line)
    for dep in map(Requirement, project["dependencies"]):
        if dep.extras:
            assert f'"{dep.name}[{",".join(sorted(dep.extras))}]"' in pinned_layer, dep
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root"


def kuberay() -> dict[str, dict]:
    """cluster/kuberay.yaml's objects by kind."""
    docs = [d for d in yaml.safe_load_all((ROOT / "cluster" / "kuberay.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_kuberay_names_the_pinned_ray_and_turns_token_auth_on():
    cluster = kuberay()["RayCluster"]
    assert cluster["spec"]["rayVersion"] == pinned_version(pins()["ray"])
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    head = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["dashboard-host"] == "127.0.0.1"
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = re.findall(r"image: (\S+)", (ROOT / "cluster" / "kuberay.yaml").read_text())
    # By digest (the tag says which release; the digest which bytes, on every node alike).
    assert images and all(re.fullmatch(rf"REGISTRY/farm:{re.escape(version)}@sha256:\S+", i) for i in images), images


def test_kuberay_pods_run_unprivileged_behind_a_network_policy_with_the_films_on_a_claim():
    objects = kuberay()
    cluster = objects["RayCluster"]["spec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
            assert not security.get("privileged") and "add" not in security["capabilities"]
    # Only the cluster's own pods reach its ports (GCS, client, dashboard, workers').
    policy = objects["NetworkPolicy"]["spec"]
    labels = {"ray.io/cluster": objects["RayCluster"]["metadata"]["name"]}
    assert policy["podSelector"] == {"matchLabels": labels} and policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": labels}}]}]
    # The films outlive the head pod.
    head = pods[0]
    films = next(v for v in head["volumes"] if v["name"] == "films")
    assert films == {"name": "films", "persistentVolumeClaim": {"claimName": objects["PersistentVolumeClaim"]
                                                                ["metadata"]["name"]}}
    assert any(m["name"] == "films" and m["mountPath"] == "/films" for m in head["containers"][0]["volumeMounts"])


def test_launcher_token_files_are_private():
    for config in (ROOT / "cluster.yaml", ROOT / "cluster" / "onprem.yaml"):
        text = config.read_text()
        makes = [line for line in text.splitlines() if "farm_auth_token" in line and "secrets.token_hex" in line]
        assert makes and all("umask 077" in line for line in makes), config  # made private on your machine
        data = yaml.safe_load(text)
        assert any("chmod 600 ~/.ray/auth_token" in c for c in data["setup_commands"]), config  # and on each node


def config_pythons() -> dict[str, str]:
    """The Python release each way of building a node gives farm's environment."""
    venv_script = (ROOT / "cluster" / "venv.sh").read_text()
    pythons = {"cluster/venv.sh": re.search(r"^PYTHON_VERSION=(\S+)$", venv_script, re.M).group(1)}
    for config in ("cluster.yaml", "cluster/onprem.yaml"):
        commands = yaml.safe_load((ROOT / config).read_text())["setup_commands"]
        # The environment is made by venv.sh before farm is installed into it, and by nothing else.
        made = [i for i, c in enumerate(commands) if "cluster/venv.sh ~/farm-venv" in c]
        installs = [i for i, c in enumerate(commands) if "pip install" in c and "constraints.txt" in c]
        assert made and installs and made[0] < installs[0], config
        assert not any("-m venv" in c for c in commands), config
        pythons[config] = pythons["cluster/venv.sh"]
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    pythons["cluster/Dockerfile"] = re.search(r"^FROM python:(\d+\.\d+\.\d+)-slim$", dockerfile, re.M).group(1)
    # KubeRay's pods run the image cluster/Dockerfile builds (checked above), so its Python.
    pythons["cluster/kuberay.yaml"] = pythons["cluster/Dockerfile"]
    return pythons


def test_every_node_gets_one_python_that_every_pin_and_pyproject_admit():
    import tomllib

    from packaging.specifiers import SpecifierSet

    pythons = config_pythons()
    # One patch release everywhere: Ray refuses a node or driver whose Python differs in it.
    assert len(set(pythons.values())) == 1, pythons
    (python,) = set(pythons.values())
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(python), f"requires-python {requires} refuses {python}"
    refused = {}
    for name, pin in pins().items():
        # The set-up installs these pins (scripts/setup: pip install -c), so what is installed here is
        # the pinned release, and its metadata says which Pythons it admits.
        assert metadata.version(name) == pinned_version(pin), f"{name}: installed {metadata.version(name)}, pinned"
        admits = metadata.metadata(name).get("Requires-Python")
        if admits and not SpecifierSet(admits).contains(python):
            refused[name] = admits
    assert not refused, f"Python {python} is refused by {refused}"
    # ... and requires-python says what the pins need: the newest of their lowest Pythons.
    floors = [x.version for n in pins() for x in SpecifierSet(metadata.metadata(n).get("Requires-Python") or "")
              if x.operator == ">="]
    needed = max(floors, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert [x.version for x in SpecifierSet(requires) if x.operator == ">="] == [needed], (requires, needed)
