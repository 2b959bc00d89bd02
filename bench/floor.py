"""The floor: the least a kopf operator can do per Trigger (patch status Ready on create).

Same kopf, same emulated API, same login as cloudtriggers: the ratio cloudtriggers / floor is what
cloudtriggers itself costs on top of kopf.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.persistence.finalizer = "cloudtriggers.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.cloudtriggers.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.cloudtriggers.io", key="last-handled-configuration"
    )
    logging.getLogger("kopf").setLevel(logging.WARNING)


@kopf.on.create("cloudtriggers.io", "v1alpha1", "triggers")
def ready(patch: kopf.Patch, **_: Any) -> None:
    patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Available", "message": ""}]
