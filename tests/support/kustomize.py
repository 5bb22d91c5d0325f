"""``kustomize build`` in Python, for the part of kustomize that k8s/ uses, and its image edit.

The deployment tests check what ``kubectl apply -k`` would apply, on machines without kustomize
or kubectl. Supported: ``resources`` (files and folders), ``components``, ``patches`` (strategic
merge, by kind and name), ``namespace`` and ``images``; any other key is refused, so that the
manifests cannot outgrow this renderer unnoticed. Where ``kubectl`` is installed, a test compares
this rendering with ``kubectl kustomize`` (kustomize itself).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "patches", "images"}
_DIGEST = re.compile(r"^(?P<name>[^@]+)@(?P<digest>sha256:[0-9a-f]{64})$")


def _kustomization(folder: Path) -> dict[str, Any]:
    body = yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}
    unknown = set(body) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml uses {sorted(unknown)}, which this renderer lacks")
    return body


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build folder`` prints (in file order, not kustomize's sort order)."""
    body = _kustomization(folder)
    if body.get("kind") == "Component":
        raise ValueError(f"{folder} is a component: build the kustomization that uses it")
    objects: list[dict[str, Any]] = []
    for entry in body.get("resources", []):
        target = folder / entry
        objects += build(target) if target.is_dir() else _documents(target)
    for entry in body.get("components", []):
        objects = _transform(folder / entry, _kustomization(folder / entry), objects, component=True)
    return _transform(folder, body, objects, component=False)


def _transform(folder: Path, body: dict[str, Any], objects: list[dict[str, Any]], *,
               component: bool) -> list[dict[str, Any]]:
    objects = [copy.deepcopy(o) for o in objects]
    if component:
        for entry in body.get("resources", []):
            objects += _documents(folder / entry)
    for patch_entry in body.get("patches", []):
        for patch in _documents(folder / patch_entry["path"]):
            _apply_patch(objects, patch, where=folder / patch_entry["path"])
    if "namespace" in body:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj.setdefault("metadata", {})["namespace"] = body["namespace"]
    for image in body.get("images", []):
        for container in containers(objects):
            container["image"] = _new_image(container["image"], image)
    return objects


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any], *, where: Path) -> None:
    meta = patch["metadata"]
    targets = [o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == meta["name"]
               and meta.get("namespace", o["metadata"].get("namespace")) == o["metadata"].get("namespace")]
    if len(targets) != 1:
        raise ValueError(f"{where}: the patch of {patch['kind']}/{meta['name']} matches {len(targets)} objects")
    merged = strategic_merge(targets[0], patch)
    targets[0].clear()
    targets[0].update(merged)


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merged key by key, lists of named maps merged by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                  for i in base + patch):
        by_name = {item["name"]: item for item in base}
        merged = [strategic_merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        patched = {i["name"] for i in patch}
        return [i for i in base if i["name"] not in patched] + merged
    return patch


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every map with an ``image`` in a ``containers`` or ``initContainers`` list, at any depth.

    kustomize's image transformer looks there in any kind, custom resources (the RayService's
    and RayJob's pod templates) included.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict) and "image" in c)
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` as (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    head, _, last = name.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{head}/{last}" if head else last), tag, digest or None
    return name, None, digest or None


def _new_image(reference: str, image: dict[str, str]) -> str:
    name, tag, digest = split_image(reference)
    if name != image["name"]:
        return reference
    new_name = image.get("newName", name)
    if image.get("digest"):
        return f"{new_name}@{image['digest']}"
    if image.get("newTag"):
        return f"{new_name}:{image['newTag']}"
    return new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def set_image(folder: Path, *references: str) -> None:
    """What ``kustomize edit set image NAME=REFERENCE ...`` does to ``folder/kustomization.yaml``.

    Args:
        folder: the kustomization (or component) holding the ``images`` list.
        references: ``name=newName[:newTag]`` or ``name=newName@sha256:...``; an entry for the
            name is replaced, as kustomize replaces it.
    """
    path = folder / "kustomization.yaml"
    body = yaml.safe_load(path.read_text())
    entries = {entry["name"]: entry for entry in body.get("images", [])}
    for reference in references:
        name, _, new = reference.partition("=")
        found = _DIGEST.match(new)
        if found:
            entries[name] = {"name": name, "newName": found["name"], "digest": found["digest"]}
        else:
            new_name, tag, _ = split_image(new)
            entries[name] = {"name": name, "newName": new_name, **({"newTag": tag} if tag else {})}
    body["images"] = sorted(entries.values(), key=lambda e: e["name"])
    path.write_text(yaml.safe_dump(body, sort_keys=False))


def with_components(source: Path, target: Path, components: list[str]) -> Path:
    """A copy of the kustomization tree ``source`` at ``target``, its top level using ``components`` too."""
    import shutil

    shutil.copytree(source, target)
    path = target / "kustomization.yaml"
    body = yaml.safe_load(path.read_text())
    body["components"] = [*body.get("components", []), *components]
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return target
