from rest_framework import authentication, exceptions

from segflow.api_keys import find_api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`, with a key from `manage.py segflow_create_api_key`."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("Authorization: expected 'Bearer <api key>'")
        api_key = find_api_key(key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Authorization: unknown or revoked API key")
        return (ApiKeyUser(api_key), api_key)

    def authenticate_header(self, request):
        return 'Bearer realm="segflow"'


class ApiKeyUser:
    """The caller of an API request: whoever holds the key."""

    is_authenticated = True

    def __init__(self, api_key) -> None:
        self.api_key = api_key
