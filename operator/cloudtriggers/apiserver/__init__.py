"""Models of the Kubernetes API server's own rules, written from its Go source.

Used by the emulated API in :mod:`cloudtriggers.sandbox.kube`, the demo and the tests, so that what a real
kube-apiserver refuses is refused here too: :mod:`.crd_validation` is the CustomResourceDefinition
validation of the apiextensions API server, :mod:`.cel` evaluates a CRD's CEL rules against objects.
"""
