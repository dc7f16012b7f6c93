"""Model families. Importing a family module registers its variants; add new families to this list."""

from edgecv.zoo.families import (  # noqa: F401 - imported to register every family
    detr,
    edge,
    faster_rcnn,
    mobilenet,
    rcnn,
    resnet,
    stn,
    unet,
    vit,
    yolo,
)
