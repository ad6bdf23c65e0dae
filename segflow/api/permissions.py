"""Which API keys may call which endpoints: each key has a scope (see ApiKey.Scope)."""

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

SCOPE_USES = {
    "ingest": "the users and events API",
    "push": "pushing configs (POST /api/push)",
}


class HasKeyScope(BasePermission):
    """An API key whose scope is the view's `required_scope` (`ingest` unless it says otherwise;
    None lets any key in). An app backend's key cannot push configs, and a push key, which runs
    code on the workers, is good for nothing else."""

    def has_permission(self, request, view) -> bool:
        if request.auth is None:
            return False  # DRF answers 401: no key
        required = getattr(view, "required_scope", "ingest")
        scope = getattr(request.auth, "scope", None)
        if required is None or scope == required:
            return True
        raise PermissionDenied(scope_refusal(scope, required))


def scope_refusal(scope: str | None, required: str) -> str:
    hint = " (manage.py segflow_create_api_key NAME --scope push)" if required == "push" else ""
    return (
        f"Authorization: this API key has the scope {scope!r}, for "
        f"{SCOPE_USES.get(scope or '', 'nothing')}; {SCOPE_USES[required]} needs a key of the "
        f"scope {required!r}{hint}"
    )
