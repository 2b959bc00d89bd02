"""Review before apply, for GitOps (docs/gitops.md): `cloudtriggers validate` (offline: what the API
server and the operator would refuse) and `cloudtriggers plan` (read-only: what the operator would do)."""
