"""A small kustomize for the tests: resources, a configMapGenerator (with its content hash in
the name, and the references to it renamed), strategic-merge and JSON 6902 patches (by name, or
on every resource of a kind), namespace, labels and images, which is all `deploy/k8s` uses
(kubectl is not on the test machines)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these manifests: maps merge, named lists merge by
    name, other values are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        # as kustomize orders them: the patch's new items first, then the base's, merged
        by_name = {item["name"]: item for item in patch}
        new = [
            copy.deepcopy(item) for item in patch if item["name"] not in {i["name"] for i in base}
        ]
        return new + [_merge(i, by_name[i["name"]]) if i["name"] in by_name else i for i in base]
    return copy.deepcopy(patch)


def _containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _json6902(resource: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """`add` and `replace` (what the manifests use), on a copy."""
    patched = copy.deepcopy(resource)
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = copy.deepcopy(operation["value"])
        if operation["op"] not in ("add", "replace"):
            raise ValueError(f"unsupported JSON patch operation {operation['op']!r}")
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif operation["op"] == "add":
                node.insert(int(last), value)
            else:
                node[int(last)] = value
        else:
            if operation["op"] == "replace" and last not in node:
                raise ValueError(f"replace of a missing {operation['path']}")
            node[last] = value
    return patched


def _generated_config_maps(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """ConfigMaps named with a hash of their data, as kustomize does, so that a change of
    configuration is a new name and the pods that use it are replaced."""
    made = []
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            for line in (folder / env_file).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    data[key.strip()] = value
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        made.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{generator['name']}-{digest}"},
                "data": data,
                "_generated_from": generator["name"],
            }
        )
    return made


def _rename_config_map_references(resource: dict[str, Any], names: dict[str, str]) -> None:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    for container in _containers(resource):
        for source in container.get("envFrom", []):
            reference = source.get("configMapRef")
            if reference and reference["name"] in names:
                reference["name"] = names[reference["name"]]
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("configMapKeyRef")
            if reference and reference["name"] in names:
                reference["name"] = names[reference["name"]]
    for volume in spec.get("volumes", []):
        reference = volume.get("configMap")
        if reference and reference["name"] in names:
            reference["name"] = names[reference["name"]]


def _patch(
    resources: list[dict[str, Any]], folder: Path, entry: dict[str, Any]
) -> list[dict[str, Any]]:
    patch = yaml.safe_load((folder / entry["path"]).read_text())
    target = entry.get("target")
    if target is not None:  # every resource of the kind (and name, if given)
        chosen = [
            r
            for r in resources
            if r["kind"] == target["kind"]
            and target.get("name", r["metadata"]["name"]) == r["metadata"]["name"]
        ]
    else:
        chosen = [
            r
            for r in resources
            if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]
        ]
    if not chosen or (target is None and len(chosen) != 1):
        raise ValueError(f"patch {entry['path']} matches {len(chosen)} resources")
    for resource in chosen:
        if isinstance(patch, list):
            patched = _json6902(resource, patch)
        else:
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
            patched = _merge(resource, body)
        resources[resources.index(resource)] = patched
    return resources


def render(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    generated = _generated_config_maps(folder, kustomization)
    names = {made.pop("_generated_from"): made["metadata"]["name"] for made in generated}
    resources.extend(generated)
    for resource in resources:
        _rename_config_map_references(resource, names)
    for patch_entry in kustomization.get("patches", []):
        resources = _patch(resources, folder, patch_entry)
    namespace = kustomization.get("namespace")
    for resource in resources:
        if namespace and resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = namespace
        for label_set in kustomization.get("labels", []):
            resource["metadata"].setdefault("labels", {}).update(label_set["pairs"])
        for image in kustomization.get("images", []):
            for container in _containers(resource):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return resources
