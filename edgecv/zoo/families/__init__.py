"""Model families. Importing a family module registers its variants; add new families to this list."""

from edgecv.zoo.families import mobilenet, resnet, unet, vit  # noqa: F401
from edgecv.zoo.families import faster_rcnn, yolo  # noqa: F401
from edgecv.zoo.families import edge  # noqa: F401
from edgecv.zoo.families import detr, stn  # noqa: F401
