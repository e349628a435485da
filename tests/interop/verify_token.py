"""Verifies an access token as another service would, with PyJWT.

Usage: verify_token.py JWKS_URL ISSUER AUDIENCE TOKEN

Fetches the key set over HTTP with PyJWKClient, picks the key by the
token's `kid`, and verifies signature, issuer, audience and times using
nothing but those three settings. Then changes one byte of the signature
and checks that the result is rejected. Prints the verified claims as JSON;
exits non-zero on any failure.
"""

import base64
import json
import sys

import jwt
from jwt import PyJWKClient


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(client, token, issuer, audience):
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
    )


def main(jwks_url, issuer, audience, token):
    client = PyJWKClient(jwks_url, cache_keys=False)
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt" or header.get("alg") != "RS256":
        print(f"unexpected header {header}", file=sys.stderr)
        return 1
    claims = verify(client, token, issuer, audience)

    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[len(raw) // 2] ^= 0x01
    tampered = ".".join([head, payload, b64url_encode(bytes(raw))])
    try:
        verify(client, tampered, issuer, audience)
    except jwt.InvalidSignatureError:
        pass
    else:
        print("a token with a changed signature byte was accepted", file=sys.stderr)
        return 1

    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
