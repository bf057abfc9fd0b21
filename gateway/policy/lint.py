"""``gateway policy check``: every problem in ``policies/``, each with its file and line.

The gateway runs the same checks at start-up and refuses to start on the first problem.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway.policy.models import Catalogue, ShopPolicy
from gateway.policy.transforms import TRANSFORMS

CATALOGUE_FILE = "catalogue.yaml"


@dataclass(frozen=True, slots=True)
class Problem:
    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class _Document:
    """A YAML file parsed twice: into Python values, and into nodes that know their lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = path.read_text(encoding="utf-8")
        self.node = yaml.compose(text)
        self.data: Any = yaml.safe_load(text)

    def line(self, *location: Any) -> int:
        node = self.node
        for part in location:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if k.value == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                match = node.value[part]
            else:
                match = None
            if match is None:
                break
            node = match
        return (node.start_mark.line + 1) if node is not None else 1


def _validate(document: _Document, model: type[BaseModel], data: Any,
              prefix: tuple[Any, ...] = ()) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(Problem(document.path, document.line(*prefix, *item["loc"]),
                                    f"{where}: {message}" if where else message))
        return None, problems


def _read(path: Path) -> tuple[_Document | None, list[Problem]]:
    try:
        return _Document(path), []
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(path, 1, f"cannot read: {error}")]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, [Problem(path, line, f"not valid YAML: {getattr(error, 'problem', error)}")]


def check_catalogue(policies_dir: Path) -> tuple[Catalogue | None, list[Problem]]:
    document, problems = _read(policies_dir / CATALOGUE_FILE)
    if document is None:
        return None, problems
    catalogue, problems = _validate(document, Catalogue, document.data)
    if catalogue is None:
        return None, problems
    for name, spec in catalogue.fields.items():
        for index, transform in enumerate(spec.transforms):
            if transform not in TRANSFORMS:
                problems.append(Problem(document.path, document.line("fields", name, "transforms", index),
                                        f"field '{name}': unknown transform '{transform}'"))
    return (catalogue if not problems else None), problems


def check_shop_policy(path: Path, catalogue: Catalogue) -> tuple[ShopPolicy | None, list[Problem]]:
    document, problems = _read(path)
    if document is None:
        return None, problems
    if not isinstance(document.data, dict):
        return None, [Problem(path, 1, "a shop file must be a mapping")]
    policy, problems = _validate(document, ShopPolicy, document.data.get("policy") or {}, ("policy",))
    if policy is None:
        return None, problems
    problems += _cross_check(document, policy, catalogue)
    return (policy if not problems else None), problems


def _cross_check(document: _Document, policy: ShopPolicy, catalogue: Catalogue) -> list[Problem]:
    problems: list[Problem] = []

    def report(message: str, *location: Any) -> None:
        problems.append(Problem(document.path, document.line("policy", *location), message))

    for purpose_id, count in Counter(p.id for p in policy.purposes).items():
        if count > 1:
            index = max(i for i, p in enumerate(policy.purposes) if p.id == purpose_id)
            report(f"duplicate purpose id '{purpose_id}'", "purposes", index, "id")
    seen: dict[tuple[str, str | None], int] = {}
    claim_sources: dict[str, set[tuple[str, str]]] = {}
    for index, rule in enumerate(policy.fields):
        spec = catalogue.fields.get(rule.field)
        if spec is None:
            report(f"unknown field '{rule.field}' (not in the catalogue)", "fields", index, "field")
            continue
        if rule.transform not in spec.transforms:
            report(f"transform '{rule.transform}' is not allowed on field '{rule.field}' "
                   f"(allowed: {', '.join(spec.transforms)})", "fields", index, "transform")
        if rule.purpose is None or policy.purpose(rule.purpose) is None:
            kind = "required field" if rule.required else "field"
            name = f"'{rule.purpose}' which does not exist" if rule.purpose else "no purpose"
            report(f"{kind} '{rule.field}' is missing a purpose (names {name})", "fields", index)
        if (rule.field, rule.purpose) in seen:
            report(f"duplicate field '{rule.field}' in purpose '{rule.purpose}'", "fields", index)
        seen[(rule.field, rule.purpose)] = index
        if rule.transform in TRANSFORMS and rule.transform != "drop":
            transform = TRANSFORMS[rule.transform]
            claim = (transform.claim or spec.claim) + transform.claim_suffix
            claim_sources.setdefault(claim, set()).add((rule.field, rule.transform))
    for claim, sources in claim_sources.items():
        if len(sources) > 1:
            index = max(i for i, r in enumerate(policy.fields) if (r.field, r.transform) in sources)
            names = ", ".join(f"{f} ({t})" for f, t in sorted(sources))
            report(f"claim '{claim}' would carry different values: {names}; use one transform",
                   "fields", index, "transform")
    problems += _check_purpose_sensitivity(document, policy, catalogue)
    return problems


def _check_purpose_sensitivity(document: _Document, policy: ShopPolicy,
                               catalogue: Catalogue) -> list[Problem]:
    problems = []
    for purpose_index, purpose in enumerate(policy.purposes):
        kinds = {catalogue.fields[r.field].sensitivity for r in policy.rules_for(purpose.id)
                 if r.field in catalogue.fields}
        if kinds == {"ordinary", "sensitive"}:
            problems.append(Problem(
                document.path, document.line("policy", "purposes", purpose_index, "id"),
                f"purpose '{purpose.id}' folds sensitive fields in with ordinary ones; "
                "give sensitive fields a purpose of their own (PIPL art. 29)"))
    return problems


def check_folder(policies_dir: Path) -> list[Problem]:
    """Every problem in the catalogue and in every shop file's policy."""
    catalogue, problems = check_catalogue(policies_dir)
    if catalogue is None:
        return problems
    for path in sorted((policies_dir / "shops").glob("*.y*ml")):
        problems += check_shop_policy(path, catalogue)[1]
    return problems
