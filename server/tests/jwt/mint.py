#!/usr/bin/env python3
"""Mint JWTs for stentor's tests with an independent library (PyJWT on
`cryptography`), and generate the keys they are signed with.

    mint.py keygen DIR
        Write NAME.key (PKCS#8 private) and NAME.pub (SPKI public) for
        rsa, rsa-other, p256, p256-other, p384, p384-other, ed25519,
        ed25519-other and p521, plus rsa.pkcs1.pub (BEGIN RSA PUBLIC KEY).

    mint.py token --alg ALG (--key FILE | --secret S) [--claims JSON]
                  [--exp SECONDS] [--nbf SECONDS] [--none] [--tamper JSON]
                  [--hmac-key-file FILE]
        Print one token. --exp/--nbf are offsets from now (negative: past).
        --none: an unsigned token (alg "none"). --tamper JSON: sign, then
        swap the payload for the claims updated with JSON, keeping the
        signature. --hmac-key-file: sign HS256/384/512 with the file's bytes
        as the secret (the "public key as HMAC secret" confusion attack,
        done by hand because PyJWT rightly refuses it).

    mint.py batch
        Read a JSON array of objects with the token options as keys (alg,
        key, secret, claims, exp, nbf, none, tamper, hmac_key_file) on
        stdin; print a JSON array of tokens, in order. One process for
        the whole test run: Python starts once.

Example: a subscriber token for the topics of user 7, valid one hour:
    mint.py token --alg HS256 --secret "$SECRET" --exp 3600 \
        --claims '{"mercure":{"subscribe":["users/7/*"]}}'
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def keygen(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    makers = {
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }
    keys = {}
    for name, make in makers.items():
        keys[name] = make()
        keys[name + "-other"] = make()
    keys["p521"] = ec.generate_private_key(ec.SECP521R1())
    for name, key in keys.items():
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        with open(os.path.join(out_dir, name + ".key"), "wb") as f:
            f.write(private)
        with open(os.path.join(out_dir, name + ".pub"), "wb") as f:
            f.write(public)
    pkcs1 = keys["rsa"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    with open(os.path.join(out_dir, "rsa.pkcs1.pub"), "wb") as f:
        f.write(pkcs1)


def mint(opts: dict) -> str:
    alg = opts["alg"]
    claims = dict(opts.get("claims") or {})
    now = int(time.time())
    if opts.get("exp") is not None:
        claims["exp"] = now + int(opts["exp"])
    if opts.get("nbf") is not None:
        claims["nbf"] = now + int(opts["nbf"])

    if opts.get("none"):
        token = jwt.encode(claims, None, algorithm="none")
    elif opts.get("hmac_key_file"):
        with open(opts["hmac_key_file"], "rb") as f:
            secret = f.read()
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        token = f"{header}.{payload}." + b64url(hmac.new(secret, signing_input, digest).digest())
    else:
        if opts.get("secret") is not None:
            key = opts["secret"]
        else:
            with open(opts["key"], "rb") as f:
                key = f.read()
        token = jwt.encode(claims, key, algorithm=alg)

    if opts.get("tamper") is not None:
        header, _, signature = token.split(".")
        claims.update(opts["tamper"])
        token = ".".join([header, b64url(json.dumps(claims).encode()), signature])
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen")
    kg.add_argument("dir")
    tk = sub.add_parser("token")
    tk.add_argument("--alg", required=True)
    tk.add_argument("--key")
    tk.add_argument("--secret")
    tk.add_argument("--claims", type=json.loads, default={})
    tk.add_argument("--exp", type=int)
    tk.add_argument("--nbf", type=int)
    tk.add_argument("--none", action="store_true")
    tk.add_argument("--tamper", type=json.loads)
    tk.add_argument("--hmac-key-file")
    sub.add_parser("batch")
    args = parser.parse_args()

    if args.cmd == "keygen":
        keygen(args.dir)
    elif args.cmd == "token":
        opts = vars(args)
        if not (opts["none"] or opts["hmac_key_file"]) and (opts["key"] is None) == (opts["secret"] is None):
            parser.error("give exactly one of --key and --secret")
        print(mint(opts))
    else:
        print(json.dumps([mint(o) for o in json.load(sys.stdin)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
