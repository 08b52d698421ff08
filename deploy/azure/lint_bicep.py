"""Offline checks of main.bicep: a lint, not a compile (no Bicep compiler can be installed offline).

    python deploy/azure/lint_bicep.py            # needs pycep-parser; azure-mgmt-appcontainers optional

1. Syntax: pycep-parser (a Lark grammar of Bicep) parses the file; without it, only brackets and
   quotes are checked.
2. What the deployment must set up: a Log Analytics workspace and a Container Apps environment that
   logs to it; a user-assigned identity with AcrPull on the registry; the container app with that
   identity for its registry; external HTTPS-only ingress to port 7860 with sticky sessions in
   single-revision mode; startup, liveness and readiness probes on /gradio_api/info:7860 within the
   platform's limits; adapters on an Azure Files share mounted at the image's adapters folder;
   min/max replicas and an HTTP concurrency scale rule bound to parameters; CPU, memory and
   the app's environment variables; main.parameters.json and deploy.sh naming only real parameters.
3. With azure-mgmt-appcontainers installed: every property name of the environment and the container
   app exists in the Container Apps REST schema (the SDK's newest API version, so a property newer
   than the template's API version would not be caught).

Exits 1 and lists the problems when a check fails.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
HEALTH_PATH, PORT = "/gradio_api/info", 7860

problems: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        problems.append(message)


def brackets_only(text: str) -> None:
    """The fallback syntax check: balanced (), [], {} outside strings and comments."""
    stack, i, line = [], 0, 1
    pairs = {")": "(", "]": "[", "}": "{"}
    while i < len(text):
        c = text[i]
        if c == "\n":
            line += 1
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i)
            check(end >= 0, f"line {line}: unterminated comment")
            line += text[i:end].count("\n")
            i = len(text) if end < 0 else end + 2
            continue
        if c == "'":
            j = i + 1
            while j < len(text) and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            check(j < len(text), f"line {line}: unterminated string")
            line += text[i:j].count("\n")
            i = j + 1
            continue
        if c in "([{":
            stack.append((c, line))
        elif c in ")]}":
            if not stack or stack[-1][0] != pairs[c]:
                problems.append(f"line {line}: unbalanced {c!r}")
                return
            stack.pop()
        i += 1
    for c, at in stack:
        problems.append(f"line {at}: {c!r} never closed")


class Template:
    def __init__(self, tree: dict):
        self.tree = tree
        self.params = tree.get("parameters", {})
        self.variables = tree.get("variables", {})

    def value(self, v):
        """A literal, or a variable's literal value (pycep gives identifiers as bare strings)."""
        if isinstance(v, str) and v in self.variables:
            return self.variables[v].get("value")
        return v

    def resources(self, type_: str) -> list[dict]:
        return [r["config"] for r in self.tree.get("resources", {}).values() if r.get("type") == type_]

    def symbol(self, type_: str) -> str | None:
        return next((name for name, r in self.tree.get("resources", {}).items() if r.get("type") == type_), None)


def get(d, *path):
    for key in path:
        if isinstance(d, dict):
            d = d.get(key)
        elif isinstance(d, list) and isinstance(key, int) and key < len(d):
            d = d[key]
        else:
            return None
    return d


def uses(expression, name: str) -> bool:
    """Whether an expression (pycep JSON) refers to the symbol `name`."""
    return bool(re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", json.dumps(expression)))


def check_requirements(t: Template) -> None:
    check(bool(t.resources("Microsoft.OperationalInsights/workspaces")), "no Log Analytics workspace")
    workspace = t.symbol("Microsoft.OperationalInsights/workspaces") or "?"
    envs = t.resources("Microsoft.App/managedEnvironments")
    check(len(envs) == 1, "expected one Container Apps environment")
    logs = get(envs[0] if envs else {}, "properties", "appLogsConfiguration")
    check(get(logs, "destination") == "log-analytics", "the environment does not log to Log Analytics")
    check(uses(get(logs, "logAnalyticsConfiguration"), workspace), "the environment's logs do not use the workspace")

    identity = t.symbol("Microsoft.ManagedIdentity/userAssignedIdentities")
    check(identity is not None, "no user-assigned identity")
    roles = t.resources("Microsoft.Authorization/roleAssignments")
    role_variables = [name for name, v in t.variables.items() if v.get("value") == ACR_PULL_ROLE]
    acr_pull = [r for r in roles if ACR_PULL_ROLE in json.dumps(r) or any(uses(r, v) for v in role_variables)]
    check(bool(acr_pull), "no AcrPull role assignment")
    registry = t.symbol("Microsoft.ContainerRegistry/registries") or "?"
    for role in acr_pull:
        check(get(role, "scope") == registry, "the AcrPull assignment is not scoped to the registry")
        check(uses(get(role, "properties", "principalId"), identity or "?"), "AcrPull is not given to the identity")

    apps = t.resources("Microsoft.App/containerApps")
    check(len(apps) == 1, "expected one container app")
    app = apps[0] if apps else {}
    env_symbol = t.symbol("Microsoft.App/managedEnvironments") or "?"
    check(uses(get(app, "properties", "managedEnvironmentId"), env_symbol), "the app is not in the environment")
    check(get(app, "identity", "type") == "UserAssigned", "the app has no user-assigned identity")
    check(uses(get(app, "identity", "userAssignedIdentities"), identity or "?"),
          "the app does not carry the pull identity")
    check(uses(get(app, "dependsOn"), t.symbol("Microsoft.Authorization/roleAssignments") or "?"),
          "the app does not depend on the AcrPull assignment (the first pull could fail)")

    config = get(app, "properties", "configuration") or {}
    check(config.get("activeRevisionsMode") == "Single", "sticky sessions need activeRevisionsMode 'Single'")
    ingress = config.get("ingress") or {}
    check(ingress.get("external") is True, "ingress is not external")
    check(t.value(ingress.get("targetPort")) == PORT, f"ingress targetPort is not {PORT}")
    check(ingress.get("allowInsecure") is False, "ingress allows plain HTTP (webcams need HTTPS)")
    check(get(ingress, "stickySessions", "affinity") == "sticky", "ingress.stickySessions.affinity is not 'sticky'")
    registries = config.get("registries") or []
    check(any(uses(r.get("identity"), identity or "?") for r in registries),
          "the registry is not pulled with the managed identity")
    check(not any("passwordSecretRef" in r for r in registries), "registry passwords: use the managed identity")

    containers = get(app, "properties", "template", "containers") or []
    check(len(containers) == 1, "expected one container")
    container = containers[0] if containers else {}
    check(uses(container.get("image"), registry), "the image does not come from the registry")
    resources = container.get("resources") or {}
    check(uses(resources.get("cpu"), "cpu") and resources.get("memory") == "memory",
          "cpu and memory are not the parameters")
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    check(env.get("GRADIO_ANALYTICS_ENABLED") == "False", "GRADIO_ANALYTICS_ENABLED is not 'False'")
    check(env.get("EMOTION_VIT_MODEL") == "modelId", "EMOTION_VIT_MODEL is not the modelId parameter")
    check(uses(env.get("HF_HUB_OFFLINE"), "modelId"),
          "HF_HUB_OFFLINE must follow modelId (offline only without a hub model)")
    probes = {p.get("type"): p for p in container.get("probes") or []}
    for kind in ("Startup", "Liveness", "Readiness"):
        probe = probes.get(kind)
        check(probe is not None, f"no {kind} probe")
        if probe is None:
            continue
        check(t.value(get(probe, "httpGet", "path")) == HEALTH_PATH, f"{kind} probe path is not {HEALTH_PATH}")
        check(t.value(get(probe, "httpGet", "port")) == PORT, f"{kind} probe port is not {PORT}")
        limits = {"failureThreshold": (1, 10), "initialDelaySeconds": (1, 60), "periodSeconds": (1, 240),
                  "timeoutSeconds": (1, 240)}
        for key, (low, high) in limits.items():
            if key in probe:
                check(low <= t.value(probe[key]) <= high, f"{kind} probe {key} outside {low}-{high}")

    # Adapters on an Azure Files share at the image's adapters folder, shared by the replicas.
    check(bool(t.resources("Microsoft.Storage/storageAccounts/fileServices/shares")), "no file share for adapters")
    check(bool(t.resources("Microsoft.App/managedEnvironments/storages")), "the environment has no adapters storage")
    check(uses(container.get("volumeMounts"), "adaptersPath") and t.value("adaptersPath") == "/home/user/app/adapters",
          "adapters volume not mounted at the adapters folder")
    check(uses(get(app, "properties", "template", "volumes"), "AzureFile"), "no AzureFile volume in the template")

    scale = get(app, "properties", "template", "scale") or {}
    check(scale.get("minReplicas") == "minReplicas" and scale.get("maxReplicas") == "maxReplicas",
          "min/max replicas are not the parameters")
    http_rules = [r for r in scale.get("rules") or [] if "http" in r]
    check(bool(http_rules) and uses(get(http_rules[0] if http_rules else {}, "http", "metadata", "concurrentRequests"),
                                    "concurrentRequests"), "no HTTP scale rule on the concurrentRequests parameter")
    check("url" in t.tree.get("outputs", {}), "no 'url' output")

    for name in ("minReplicas", "maxReplicas", "concurrentRequests", "cpu", "memory", "modelId", "acrName", "image"):
        check(name in t.params, f"parameter {name} missing")


def check_parameter_files(t: Template) -> None:
    parameters = json.loads((HERE / "main.parameters.json").read_text())["parameters"]
    for name in parameters:
        check(name in t.params, f"main.parameters.json sets {name}, which main.bicep does not declare")
    deploy = (HERE / "deploy.sh").read_text()
    passed = set(re.findall(r"\b([A-Za-z]\w*)=", " ".join(re.findall(r"--parameters[^\n]*", deploy))))
    for name in passed:
        check(name in t.params, f"deploy.sh passes {name}, which main.bicep does not declare")
    for name, spec in t.params.items():
        if spec.get("default") is None:
            check(name in parameters or name in passed, f"parameter {name} has no default and is never given")


def check_schema(t: Template) -> str:
    try:
        from azure.mgmt.appcontainers import models
    except ImportError:
        return "schema: skipped (pip install azure-mgmt-appcontainers to check property names)"

    def fields(cls) -> dict:
        cls()  # the SDK computes the REST names on first use
        hints = typing.get_type_hints(cls, vars(models) | {"_models": models})
        return {rf._rest_name: hints.get(attr) for attr, rf in cls._attr_to_rest_field.items()}

    def model_of(hint):
        """The model class in an Optional[X] / list[X] / Union[...] hint, and whether X is a map's values."""
        args = [hint]
        while args:
            h = args.pop()
            if isinstance(h, type) and issubclass(h, models._models._Model):
                return h, False
            if typing.get_origin(h) is dict:
                return model_of(typing.get_args(h)[1])[0], True
            args.extend(typing.get_args(h))
        return None, False

    def walk(value, cls, where: str) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, cls, f"{where}[{i}]")
            return
        if not isinstance(value, dict) or any(k in value for k in ("function", "operator")):
            return  # an expression: its result cannot be checked here
        known = fields(cls)
        for key, item in value.items():
            if key not in known:
                problems.append(f"{where}.{key}: no such property in {cls.__name__}")
            else:
                sub, is_map = model_of(known[key])
                if sub is not None and is_map and isinstance(item, dict):
                    for name, entry in item.items():
                        walk(entry, sub, f"{where}.{key}[{name}]")
                elif sub is not None:
                    walk(item, sub, f"{where}.{key}")

    for type_, cls in (("Microsoft.App/containerApps", models.ContainerApp),
                       ("Microsoft.App/managedEnvironments", models.ManagedEnvironment)):
        for body in t.resources(type_):
            walk({k: v for k, v in body.items() if k != "dependsOn"}, cls, type_)
    return "schema: property names checked against azure-mgmt-appcontainers' models"


def main() -> int:
    text = (HERE / "main.bicep").read_text()
    try:
        from lark.exceptions import LarkError
        from pycep import BicepParser
    except ImportError:
        brackets_only(text)
        notes = ["syntax: brackets and quotes only (pip install pycep-parser for a full parse)",
                 "requirements: skipped (they need pycep-parser)"]
    else:
        try:
            tree = BicepParser().parse(text=text)
        except (LarkError, ValueError) as error:  # lark's errors name the line and column
            print(f"FAIL: main.bicep does not parse: {error}")
            return 1
        template = Template(tree)
        check_requirements(template)
        check_parameter_files(template)
        notes = ["syntax: parsed by pycep-parser", "requirements: checked", check_schema(template)]
    for note in notes:
        print(note)
    if problems:
        print("FAIL:\n  " + "\n  ".join(problems))
        return 1
    print("OK: main.bicep passes the offline lint "
          "(not a compile: run `az bicep build -f main.bicep` where Bicep is installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
