"""cloudtriggers: a Kubernetes operator for deployment triggers at ACK, SWR and GitLab."""

__version__ = "0.1.0"
