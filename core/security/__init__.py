"""Who may talk to a Tailrace process, and how it is proven.

- `identity.py`: the principals (a cluster member named by its certificate,
  an account named by its access key, or nobody) and member certificate names;
- `certs.py`: making a CA and certificates (the launcher's local clusters);
- `tls.py`: the `[tls]` config, server and channel credentials, certificate checks;
- `signing.py`: the per-request HMAC signature of an account;
- `acl.py`: accounts and permissions from the ACL file, reloaded on change;
- `guard.py`: the server interceptor that authenticates every call and
  authorizes it against `core/access.py`'s table.
"""
