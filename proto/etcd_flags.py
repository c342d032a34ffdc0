"""The etcd client flags every flotilla process that talks to etcd takes (join, manage, list):
TLS files and a user. The password is never a flag (a command line is readable by every user
of the host through /proc): it comes from $FLOTILLA_ETCD_PASSWORD or --etcd-password-file."""

from __future__ import annotations

import argparse
import os

from proto.kv import EtcdSecurity

PASSWORD_ENV = "FLOTILLA_ETCD_PASSWORD"


def add_etcd_security_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etcd-cacert", default="", help="CA of etcd's server certificate")
    parser.add_argument("--etcd-cert", default="", help="client certificate towards etcd")
    parser.add_argument("--etcd-key", default="", help="its key")
    parser.add_argument(
        "--etcd-user",
        default="",
        help=f"etcd user (password from ${PASSWORD_ENV} or --etcd-password-file)",
    )
    parser.add_argument(
        "--etcd-password-file", default="", help="file whose first line is the etcd password"
    )


def etcd_security_from_args(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> EtcdSecurity | None:
    environ = dict(os.environ) if environ is None else environ
    ca, cert, key = args.etcd_cacert, args.etcd_cert, args.etcd_key
    if bool(cert) != bool(key):
        raise ValueError("--etcd-cert and --etcd-key go together")
    if cert and not ca:
        raise ValueError("--etcd-cert needs --etcd-cacert (the CA of etcd's certificate)")
    user, password = args.etcd_user, ""
    if ":" in user:
        raise ValueError(
            f"--etcd-user takes a user name only: give the password in ${PASSWORD_ENV} or "
            "--etcd-password-file, never on the command line"
        )
    if args.etcd_password_file:
        if not user:
            raise ValueError("--etcd-password-file needs --etcd-user")
        with open(args.etcd_password_file) as f:
            password = f.readline().rstrip("\r\n")
    elif user:
        password = environ.get(PASSWORD_ENV, "")
        if not password:
            raise ValueError(
                f"--etcd-user needs a password: ${PASSWORD_ENV} or --etcd-password-file"
            )
    if not (ca or user):
        return None
    for path in (ca, cert, key):
        if path and not os.path.isfile(path):
            raise ValueError(f"{path}: no such file")
    return EtcdSecurity(ca=ca, cert=cert, key=key, user=user, password=password)
