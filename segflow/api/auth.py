import base64
import binascii

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


class BasicApiKeyAuthentication(authentication.BaseAuthentication):
    """/v1/ (the Segment tracking spec): HTTP Basic with an API key as the user name and an empty
    password, as Segment's libraries send their write key; a bearer key works too."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            raise exceptions.AuthenticationFailed(
                "Authorization: missing; send HTTP Basic auth with the API key as the user name "
                "and an empty password (Segment's libraries do, with the key as the write key)"
            )
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return ApiKeyAuthentication().authenticate(request)
        if scheme.lower() != "basic":
            raise exceptions.AuthenticationFailed(
                "Authorization: expected 'Basic <base64 of api key:>'"
            )
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed(
                "Authorization: the Basic credentials are not valid base64"
            ) from None
        key = decoded.partition(":")[0].strip()
        if not key:
            raise exceptions.AuthenticationFailed(
                "Authorization: the API key goes in the user name, before the ':'"
            )
        api_key = find_api_key(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Authorization: unknown or revoked API key")
        return (ApiKeyUser(api_key), api_key)

    def authenticate_header(self, request):
        return 'Basic realm="segflow"'
