"""`dicom-deid evaluate`: privacy (re-identification) and utility (landmark and keypoint
invariance) of the face methods on a manifest of captures (shared/EVALUATION.md)."""

from __future__ import annotations

import argparse
import sys

from dicom_deid import face_methods
from dicom_deid.policy import DEFAULT_FACE_SHAPE


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="measure re-identification and landmark utility of face methods",
        description="Run each method on the probes of a manifest (path,identity,role"
                    "[,deidentified]) and write DIR/metrics.json, DIR/run.json, DIR/report.html.",
    )
    # The unchanged input and every registered face method.
    default_methods = ",".join(("original", *face_methods.names()))
    parser.add_argument("--manifest", required=True, help="CSV: path,identity,role[,deidentified]")
    parser.add_argument("--methods", default=default_methods,
                        help=f"comma-separated (default {default_methods}; 'deidentified' uses "
                             "the manifest's deidentified column)")
    parser.add_argument("--output", required=True, help="folder for metrics.json and report.html")
    parser.add_argument("--max-frames", type=int, default=75,
                        help="frames per video (from the start; 0 = all; default 75)")
    parser.add_argument("--descriptor-step", type=int, default=5,
                        help="compute the dlib descriptor on every Nth frame (default 5)")
    parser.add_argument("--shape", type=float, default=DEFAULT_FACE_SHAPE, help=f"swap shape parameter (0..1; default {DEFAULT_FACE_SHAPE})")
    parser.add_argument("--body", action="store_true",
                        help="also measure MediaPipe pose and hand keypoints (slower)")
    parser.add_argument("--crops", type=int, default=6,
                        help="probes shown as before/after crops of every method in the report; "
                             "the report then embeds original faces (PHI for patient data; "
                             "0 = no pictures)")
    parser.add_argument("--keys", type=int, default=3,
                        help=f"site keys that {' and '.join(face_methods.keyed())} run under (privacy pooled over "
                             "them and the worst key; default 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.evaluate.embeddings import EvaluationDependencyError
    from dicom_deid.evaluate.manifest import ManifestError
    from dicom_deid.evaluate.run import Settings, evaluate
    from dicom_deid.video import VideoError

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        print("dicom-deid evaluate: --methods is empty", file=sys.stderr)
        return 2
    if args.keys < 1:
        print("dicom-deid evaluate: --keys must be at least 1", file=sys.stderr)
        return 2
    if args.descriptor_step < 1:
        print("dicom-deid evaluate: --descriptor-step must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(
        methods=methods,
        max_frames=args.max_frames or None,
        descriptor_step=args.descriptor_step,
        shape=args.shape,
        body=args.body,
        crops=max(0, args.crops),
        progress=True,
        keys=args.keys,
    )
    try:
        metrics = evaluate(args.manifest, args.output, settings)
    except (ManifestError, EvaluationDependencyError, VideoError, ValueError, OSError) as exc:
        # Each of these names the file and the problem; nothing has been written yet
        # (metrics.json and report.html are written at the end, atomically).
        print(f"dicom-deid evaluate: {exc}", file=sys.stderr)
        return 2
    for method, values in metrics.items():
        if not values.get("available"):
            print(f"{method:10s} unavailable: {values.get('error')}")
            continue
        print(f"{method:10s} " + " ".join(
            f"{k}={values.get(k)}" for k in ("rank1", "rank5", "chance", "linkage_rank1",
                                             "verification_rate", "no_face_rate", "nme_mediapipe",
                                             "nme_dlib68", "detection_retention", "leaks",
                                             "rank1_worst_key", "linkage_rank1_worst_key",
                                             "expression_cosine", "expression_projection",
                                             "expression_widening_kept",
                                             "expression_corner_lift_kept",
                                             "video_expression_cosine", "boundary_contrast",
                                             "skin_neck_delta_e", "flicker_ratio")))
    print(f"wrote {args.output}/metrics.json and {args.output}/report.html")
    if settings.crops:
        print("note: report.html embeds original faces from the data (PHI for patient data); "
              "keep it with the data, never commit or publish it")
    return 0
