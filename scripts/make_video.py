"""Write a demo video of synthetic scenes (shapes on real photos), e.g. for `edgecv run --source`.

    python scripts/make_video.py out.mp4 --seconds 4 --task classify --size 720

Each scene is held for a few frames and drifts slowly, like a camera panning; deterministic from --seed.
Scenes are rendered at --size and stretched to 16:9.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edgecv.data.synth import image_rng, render_classify, render_objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--task", choices=["classify", "detect", "segment"], default="classify")
    ap.add_argument("--size", type=int, default=256, help="scene side; the frame is 16:9 at this height")
    ap.add_argument("--hold", type=int, default=10, help="frames per scene")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    h = args.size
    w = (h * 16 // 9) // 2 * 2
    n = max(1, int(args.seconds * args.fps))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"cannot open a video writer for {args.output}")
    scene = None
    for i in range(n):
        if i % args.hold == 0:
            rng = image_rng(args.seed, "video", i // args.hold)
            img = render_classify(rng, h)[0] if args.task == "classify" else render_objects(rng, h)[0]
            if args.task == "classify":
                # stretched to the frame: a stretch-resize classifier sees exactly the scene it was trained on
                scene = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            else:
                # square scene centred on grey bars: a letterboxing detector sees undistorted shapes
                pad = w - h
                scene = cv2.copyMakeBorder(
                    img, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_CONSTANT, value=(114, 114, 114)
                )
        shift = np.float32([[1, 0, (i % args.hold) * 0.8], [0, 1, 0]])
        frame = cv2.warpAffine(scene, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
        writer.write(frame)
    writer.release()
    tmp.replace(args.output)
    print(f"wrote {args.output}: {n} frames {w}x{h} @ {args.fps} fps")


if __name__ == "__main__":
    main()
