"""GitHub Actions' OIDC tokens as Workload Identity Federation reads them, in plain Python (no Pulumi).

One source for the CI component (kit_infra/ci_access.py), which writes the provider's attribute mapping and condition
and the principal sets, and the policy pack (infra/policy/rules.py), which reads them back off any resource.
"""

from __future__ import annotations

import re

ISSUER = "https://token.actions.githubusercontent.com"  # one issuer for every repository on GitHub
MAIN_REF = "refs/heads/main"  # .github/workflows/image.yml builds on pushes to this branch
RELEASE_ENVIRONMENT = "release"  # .github/workflows/release.yml's protected environment

# What a token carries into IAM. google.subject is required for OIDC providers (iam v1 discovery document); the others
# are what the CI accounts' bindings match. The ref and the environment are mapped together with the repository, so a
# binding on them names the repository too: principal sets are per pool, not per provider. `environment` is a claim
# only of jobs that name an environment.
ATTRIBUTE_MAPPING = {
    "google.subject": "assertion.sub",
    "attribute.repository": "assertion.repository",
    "attribute.repository_ref": "assertion.repository + '@' + assertion.ref",
    "attribute.repository_environment": "assertion.repository + '@' + (has(assertion.environment) ? assertion.environment : '')",
}

_REPOSITORY_CLAUSE = re.compile(r"""assertion\.repository\s*==\s*(['"])([^'"]+)\1""")
WHOLE_POOL = re.compile(r"principalSet://iam\.googleapis\.com/projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/\*")


def attribute_condition(repository: str, repository_id: str | None = None, owner_id: str | None = None) -> str:
    """Accept tokens of this repository only: by name, and by its numeric ids where given."""
    clauses = [f"assertion.repository == '{repository}'"]
    if repository_id:
        clauses.append(f"assertion.repository_id == '{repository_id}'")
    if owner_id:
        clauses.append(f"assertion.repository_owner_id == '{owner_id}'")
    return " && ".join(clauses)


def _top_level(condition: str, operator: str) -> list[str]:
    """`condition` split on `operator` outside parentheses and string literals."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(condition):
        c = condition[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and condition.startswith(operator, i):
            parts.append(condition[start:i])
            start = i = i + len(operator)
            continue
        i += 1
    return [*parts, condition[start:]]


def _encloses(clause: str) -> bool:
    """Whether the clause's first parenthesis closes at its last character: `(a) && (b)` is not enclosed."""
    depth = 0
    for i, c in enumerate(clause):
        depth += (c == "(") - (c == ")")
        if depth == 0:
            return i == len(clause) - 1
    return False


def _unparenthesised(clause: str) -> str:
    clause = clause.strip()
    while clause.startswith("(") and _encloses(clause):
        clause = clause[1:-1].strip()
    return clause


def pinned_repository(condition: str | None) -> str | None:
    """The repository a condition pins, or None when it pins none.

    Pinning means: the condition is a conjunction (no top-level `||`, nor a top-level `? :`, which binds loosest of all
    and could turn the whole conjunction into `true`) and one of its top-level clauses is exactly
    `assertion.repository == 'owner/name'`. Other clauses can only narrow it further.
    """
    if not condition or any(len(_top_level(condition, operator)) > 1 for operator in ("||", "?")):
        return None
    for clause in _top_level(condition, "&&"):
        match = _REPOSITORY_CLAUSE.fullmatch(_unparenthesised(clause))
        if match:
            return match.group(2)
    return None
