"""evaluate: privacy (re-identification) and utility (landmark and keypoint invariance) of the
face methods, per shared/EVALUATION.md; `dicom-deid evaluate` runs it.

Modules: manifest (CSV of captures, frames of images/videos/DICOM), embeddings (dlib detector,
68-point predictor, ResNet descriptor; dlib is imported only here), observer (what dlib,
MediaPipe face mesh 478, CenterFace and optionally MediaPipe pose/hands see on a frame), privacy
(identification, linkage, verification on descriptors), utility (NME, EAR/MAR, jitter, PCK),
video_metrics (correlation, blinks), aggregate (metrics.json), report (report.html), run.

metrics.json has one entry per method (original = the probe untouched). Rates are fractions,
NME and jitter are percent of the original's outer-eye-corner distance:

- rank1 / rank5: de-identified probe captures (a video's clip-mean descriptor) identified
  against the original gallery (gallery + distractor rows, best descriptor per identity);
  *_frames: the same per frame. chance = 1 / gallery identities, chance5 = min(5, G) / G.
  No face found on the output = not identified (no_face_rate: share of probe frames where
  dlib finds no face on the output; no_face_rate_captures per capture).
- linkage_rank1 / linkage_rank5: de-identified probes against the de-identified gallery (each
  capture de-identified with its own donor seed).
- verification_rate: genuine pairs (original gallery capture, de-identified probe capture of
  the same identity) closer than dlib's 0.6; *_frames per frame.
- nme_mediapipe / nme_dlib68: mean over probe frames where both sides have landmarks;
  detection_retention: MediaPipe face mesh found on the output where it was found on the
  original (detection_retention_dlib: the same with dlib's detector);
  nme_*_floor_jpeg / nme_*_floor_adjacent: each model against itself (original vs a JPEG
  quality 90 re-encode; adjacent original frames of videos).
- videos: per clip ear_r / mar_r (Pearson r of the aspect-ratio series with the original's),
  ear_mae, blinks (EAR under 0.75 x the original's median for >= 2 frames), jitter (mean
  second difference) before and after; the top-level values are means over clips.
- *_keypoint_displacement / *_pck05 (with --body): MediaPipe pose face points (0-10), body
  points (11-32) and hands, in percent of the original pose's bounding-box diagonal.
- leaks: probe frames where the output's descriptor matches the same original frame's (under
  0.6), or CenterFace finds a face whose box is unchanged from the original (mean absolute
  difference under 4 levels); split into leaks_recogniser and leaks_detector.
"""
