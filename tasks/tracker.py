"""The trackers detect_track uses: ultralytics' own, configured from their YAML, and BoT-SORT with
filmroom's association cost for footage analysed at a few frames per second.

Stock BoT-SORT matches on IoU and lets an appearance feature only *lower* a cost (the minimum of the
two). At 5 analysed frames per second a running player moves about his own width between samples,
so IoU says little, and a kit colour shared by ten team-mates, taken as a reason to match, makes
tracks jump between them (on the quality set most ID switches were an existing track taking over a
player of the *other* team, or one several widths away). :class:`MotionKitBoTSORT` keeps
everything of BoT-SORT (Kalman filter, camera-motion compensation, the two-stage ByteTrack
association, lost-track buffer) but costs a track/detection pair as

    distance(predicted centre, detection centre) / (gate x box height)
    + size_weight x |log(height ratio)| + kit_weight x kit distance / kit_gate

and forbids the pair when the centre is further than ``gate`` heights or the kits differ by more
than ``kit_gate`` (so appearance can only veto or rank, never pull a track onto another player).
Its Kalman filter also trusts a constant velocity less than ultralytics' (``kf_position``,
``kf_velocity``), as players turn between two samples at 5 fps.

Measured on the quality set (``bench/tracking_quality.py``, 5 clips x 20 s), stock BoT-SORT with
buffered IoU -> this association (+ tracks started on confident boxes) -> + the Kalman noise:
tracks MOTA 0.834 -> 0.880 -> 0.895, IDF1 0.641 -> 0.764 -> 0.789; team accuracy of the
identities built on the tracks 0.92 -> 0.996 -> 0.995.

Tried and not kept: the jersey numbers as a veto (each box's read, ``number_min_conf`` 0.9, passed
with its kit feature; a track whose number 2 reads and 70 % of its reads establish is not matched,
in either association stage, to a box reading another). On the five quality sets (20 s tuned / +100
/ +200, 60 s tuned / +100, whole pipeline, default preset) it made mostly better tracks — MOTA
0.916 / 0.901 / 0.913 / 0.901 / 0.891 -> 0.922 / 0.912 / 0.919 / 0.908 / 0.899, IDF1 0.885 / 0.824
/ 0.894 / 0.656 / 0.605 -> 0.871 / 0.828 / 0.912 / 0.676 / 0.655, identity IDF1 +0.004-0.012 —
but not better screen time: players over 3 % of the clip 2 / 6 / 3 / 5 / 7 -> 3 / 6 / 4 / 6 / 7,
mean error 1.11 / 1.35 / 0.95 / 0.95 / 1.09 % -> 1.34 / 1.33 / 1.10 / 0.96 / 1.15 %. The vetoed
track lets a player go behind a team-mate whose number shows, and his identity's gap then passes
the screen-time holds by a frame or two (a mixed track had covered him). The code is on the
``exp/number-veto`` branch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.detector import ensure_offline

FORBIDDEN = 1e3
GMC_DOWNSCALE = 4
GMC_CORNERS = 100

# Defaults of the filmroom association (overridable through DetectParams.tracker_options).
ASSOCIATION_DEFAULTS: dict[str, float] = {
    "gate": 0.6,  # in (buffered) box heights: see DetectParams.box_buffer, ~2 real heights
    "kit_gate": 0.15,  # half cosine distance of the kit features (0 = same colours)
    "kit_weight": 1.0,
    "size_weight": 0.5,
    # Kalman filter noise, per unit of box size: ultralytics' 1/20 and 1/160 trust a constant velocity
    # for many frames, right at 30 fps; at 5 fps a player turns between two samples (only the ratio
    # matters for the prediction: 4 measured best of 0.125-8 on the quality set).
    "kf_position": 1 / 40,
    "kf_velocity": 1 / 10,
    # The share of a lost track's velocity kept at each prediction (ultralytics keeps it all and only
    # stops the box's growth; 0 = a lost player is looked for where he was last seen). On the quality
    # set 0 gave tracks IDF1 0.789 -> 0.798 before tasks/link.py but 0.838 -> 0.828 after it (and
    # chunked - whole IDF1 -0.005 -> -0.012), so the drift is kept and link.py joins the fragments.
    "lost_velocity": 1.0,
}


def make_tracker(
    kind: str,
    analysis_fps: float,
    track_buffer_s: float,
    options: dict[str, float | str | bool] | None = None,
    appearance: bool = False,
    association: str = "motion",
) -> Any:
    """An ultralytics tracker configured from its own YAML, with the buffer expressed in seconds.

    ``association="motion"`` (BoT-SORT only) uses :class:`MotionKitBoTSORT`; ``"iou"`` the stock cost.
    """
    ensure_offline()
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = IterableSimpleNamespace(**YAML.load(check_yaml(f"{kind}.yaml")))
    # A ReID network would need a download: the "auto" encoder takes the features we pass instead.
    cfg.with_reid = bool(appearance) and kind == "botsort"
    cfg.model = "auto"
    # The trackers keep a lost track for track_buffer analysed frames.
    cfg.track_buffer = max(1, round(track_buffer_s * analysis_fps))
    if hasattr(cfg, "gmc_method"):
        cfg.gmc_method = "sparseOptFlow"  # camera pans: compensate global motion for BoT-SORT
    motion = kind == "botsort" and association == "motion"
    if motion:
        for key, default in ASSOCIATION_DEFAULTS.items():
            setattr(cfg, key, default)
    for key, value in (options or {}).items():
        setattr(cfg, key, value)
    tracker_class: Any = _motion_kit_botsort() if motion else TRACKER_MAP[kind]
    tracker = tracker_class(args=cfg)
    if hasattr(tracker, "gmc"):
        # Optical flow of 100 corners on a 160x90 image (the frames come at model size, 640 wide)
        # instead of 400 on 320x180. On the quality set 200 -> 100 corners: GMC ~40% cheaper, tracks
        # IDF1 0.855 -> 0.861, chunked - whole IDF1 -0.016 -> -0.009 (q-default 0.901 -> 0.899).
        tracker.gmc.downscale = GMC_DOWNSCALE
        tracker.gmc.feature_params = {**tracker.gmc.feature_params, "maxCorners": GMC_CORNERS}
    return tracker


def association_cost(
    tracks_xywh: np.ndarray,
    dets_xywh: np.ndarray,
    kit_distance: np.ndarray | None,
    *,
    gate: float,
    kit_gate: float,
    kit_weight: float,
    size_weight: float,
) -> np.ndarray:
    """The (tracks x detections) cost described in the module docstring (``FORBIDDEN`` = no match)."""
    t, d = tracks_xywh[:, None, :], dets_xywh[None, :, :]
    height = np.maximum(np.maximum(t[..., 3], d[..., 3]), 1e-6)
    distance = np.hypot(t[..., 0] - d[..., 0], t[..., 1] - d[..., 1]) / height
    size = np.abs(np.log(np.maximum(t[..., 3], 1e-6) / np.maximum(d[..., 3], 1e-6)))
    cost = distance / gate + size_weight * size
    if kit_distance is not None:
        cost = cost + kit_weight * kit_distance / kit_gate
        cost[kit_distance > kit_gate] = FORBIDDEN
    cost[distance > gate] = FORBIDDEN
    return np.asarray(cost)


def _motion_kit_botsort() -> type:
    """Defined on first use: ultralytics is imported only once it has been told to stay offline.

    Besides the association, the tracker, its tracks and its Kalman filter redo a few of ultralytics'
    per-track steps with less Python around the same arithmetic (the same numpy operations in the same
    order, so the same floats and the same tracks): the Kalman correction, the kit-feature smoothing,
    building the tracks of a frame's detections and the boxes the cost reads. At ~11 boxes a frame these
    calls, not the arithmetic, were most of the tracker's time outside the camera-motion estimate
    (``bench/tracker.py --reference`` times both and checks the ids).
    """
    global _MOTION_KIT_BOTSORT
    if _MOTION_KIT_BOTSORT is not None:
        return _MOTION_KIT_BOTSORT
    from ultralytics.trackers.basetrack import TrackState
    from ultralytics.trackers.bot_sort import BOTSORT, BOTrack
    from ultralytics.trackers.utils import matching
    from ultralytics.trackers.utils.kalman_filter import KalmanFilterXYWH
    from ultralytics.trackers.utils.stracks import multi_gmc
    from ultralytics.utils import LOGGER

    tracked = TrackState.Tracked

    class LeanKalman(KalmanFilterXYWH):
        """KalmanFilterXYWH.update inlined (project, solve, multi_dot's own order A(BC) for 8x4·4x4·4x8)."""

        def update(
            self,
            mean: np.ndarray,
            covariance: np.ndarray,
            measurement: np.ndarray,
            confidence: float | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            if confidence is not None:
                return super().update(mean, covariance, measurement, confidence)
            std = self._std_weight_position * mean[2:4]
            projected_cov = covariance[:4, :4] + np.diag(np.square((std[0], std[1], std[0], std[1])))
            kalman_gain = np.linalg.solve(projected_cov, covariance[:, :4].T).T
            innovation = measurement - mean[:4]
            new_mean = mean + np.dot(innovation, kalman_gain.T)
            new_covariance = covariance - np.dot(kalman_gain, np.dot(projected_cov, kalman_gain.T))
            return new_mean, new_covariance

        def multi_predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """KalmanFilterXYWH.multi_predict without np.r_ (the same products and sums)."""
            wh = mean[:, 2:4].T
            sqr = np.square(
                np.concatenate([self._std_weight_position * wh, self._std_weight_velocity * wh])[
                    [0, 1, 0, 1, 2, 3, 2, 3]
                ]
            ).T
            motion_cov = np.zeros((sqr.shape[0], 8, 8))
            motion_cov[:, range(8), range(8)] = sqr
            mean = np.dot(mean, self._motion_mat.T)
            left = np.dot(self._motion_mat, covariance).transpose((1, 0, 2))
            covariance = np.dot(left, self._motion_mat.T) + motion_cov
            return mean, covariance

        def multi_update(
            self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            """:meth:`update` of N tracks at once (N x 8, N x 8 x 8, N x 4): the same products per track."""
            std = self._std_weight_position * mean[:, 2:4]
            innovation_cov = np.zeros((len(mean), 4, 4))
            innovation_cov[:, range(4), range(4)] = np.square(std[:, [0, 1, 0, 1]])
            projected_cov = covariance[:, :4, :4] + innovation_cov
            gain_t = np.linalg.solve(projected_cov, covariance[:, :, :4].transpose(0, 2, 1))  # K^T, N x 4 x 8
            innovation = measurement - mean[:, :4]
            new_mean = mean + np.matmul(innovation[:, None, :], gain_t)[:, 0]
            new_covariance = covariance - np.matmul(
                gain_t.transpose(0, 2, 1), np.matmul(projected_cov, gain_t)
            )
            return new_mean, new_covariance

    class LeanTrack(BOTrack):
        """BOTrack with its per-frame steps inlined (same arithmetic as ultralytics')."""

        curr_feat: Any
        smooth_feat: Any
        kalman_filter: Any

        def update_features(self, feat: np.ndarray) -> None:
            # reid.smooth_feature, with np.linalg.norm's own sqrt(x.x)
            feat = np.asarray(feat, dtype=np.float32)
            norm = np.sqrt(feat.dot(feat))
            if norm < 1e-12:
                return
            feat = feat / norm
            smooth = self.smooth_feat
            if smooth is None:
                self.curr_feat, self.smooth_feat = feat, feat.copy()
                return
            smooth = self.alpha * smooth + (1 - self.alpha) * feat
            self.curr_feat, self.smooth_feat = feat, smooth / np.sqrt(smooth.dot(smooth))

        def update(self, new_track: Any, frame_id: int) -> None:
            # BOTrack.update + STrack.update (no angle: axis-aligned boxes)
            if new_track.curr_feat is not None:
                self.update_features(new_track.curr_feat)
            self.frame_id = frame_id
            self.tracklet_len += 1
            self.mean, self.covariance = self.kalman_filter.update(
                self.mean,
                self.covariance,
                _centre(new_track._tlwh if new_track.mean is None else new_track.tlwh),
            )
            self.state = tracked
            self.is_activated = True
            self.score = new_track.score
            self.cls = new_track.cls
            self.idx = new_track.idx

        @property
        def xywh(self) -> np.ndarray:
            ret = self.tlwh  # a fresh array already
            ret[:2] += ret[2:] / 2
            return ret

    def _centre(tlwh: np.ndarray) -> np.ndarray:
        """BOTrack.tlwh_to_xywh of a detection's box (a copy)."""
        ret = tlwh.copy()
        ret[:2] += ret[2:] / 2
        return ret

    def boxes_xywh(tracks: list[Any]) -> np.ndarray:
        """``[t.xywh for t in tracks]`` as float64, computed for all tracks at once (the same elementwise
        arithmetic: the Kalman mean's box, or a detection's float32 box, to top-left and back)."""
        if tracks[0].mean is not None and all(t.mean is not None for t in tracks):
            ret = np.array([t.mean[:4] for t in tracks])
        elif all(t.mean is None for t in tracks):
            ret = np.array([t._tlwh for t in tracks])
            ret[:, :2] += ret[:, 2:] / 2
            return ret.astype(np.float64)
        else:
            return np.array([t.xywh for t in tracks], np.float64)
        ret[:, :2] -= ret[:, 2:] / 2
        ret[:, :2] += ret[:, 2:] / 2
        return ret

    class MotionKitBoTSORT(BOTSORT):
        """BoT-SORT with filmroom's centre-distance + kit-gate association (see the module docstring)."""

        kalman_filter: Any  # a LeanKalman

        def get_kalmanfilter(self) -> KalmanFilterXYWH:
            kf = LeanKalman()
            kf._std_weight_position = float(self.args.kf_position)
            kf._std_weight_velocity = float(self.args.kf_velocity)
            return kf

        def init_track(self, results: Any, img: np.ndarray | None = None) -> list[Any]:
            """BOTSORT.init_track, with the boxes converted for all detections at once."""
            if len(results) == 0:
                return []
            xywh = np.asarray(results.xywh)
            if xywh.ndim != 2 or xywh.shape[1] != 4:  # oriented boxes: ultralytics' own path
                return list(super().init_track(results, img))
            xywh = xywh.astype(np.float64)  # parse_bboxes' concatenation with the indices
            ltwh = xywh.copy()
            ltwh[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
            ltwh = ltwh.astype(np.float32)
            feats = img if self.args.with_reid and self.encoder is not None and img is not None else None
            tracks = []
            for i, (box, score, cls) in enumerate(zip(ltwh, results.conf, results.cls, strict=True)):
                track = LeanTrack.__new__(LeanTrack)
                track.__dict__.update(
                    track_id=0,
                    is_activated=False,
                    state=TrackState.New,
                    score=score,
                    start_frame=0,
                    frame_id=0,
                    _tlwh=box,
                    kalman_filter=None,
                    mean=None,
                    covariance=None,
                    tracklet_len=0,
                    cls=cls,
                    idx=float(i),
                    angle=None,
                    smooth_feat=None,
                    curr_feat=None,
                    alpha=0.9,
                )
                if feats is not None:
                    track.update_features(feats[i])
                tracks.append(track)
            return tracks

        def _apply_matches(
            self,
            matches: Any,
            pool: list[Any],
            detections: list[Any],
            activated: list[Any],
            refind: list[Any],
        ) -> None:
            """BYTETracker._apply_matches (BOTrack.update / re_activate), one Kalman correction for all."""
            pairs = [(pool[i], detections[j]) for i, j in matches]
            if len(pairs) < 2 or any(t.angle is not None or t.mean is None for t, _ in pairs):
                super()._apply_matches(matches, pool, detections, activated, refind)
                return
            for track, det in pairs:
                if det.curr_feat is not None:
                    track.update_features(det.curr_feat)
            mean, covariance = self.kalman_filter.multi_update(
                np.array([t.mean for t, _ in pairs]),
                np.array([t.covariance for t, _ in pairs]),
                np.array([_centre(d._tlwh if d.mean is None else d.tlwh) for _, d in pairs]),
            )
            for (track, det), m, c in zip(pairs, mean, covariance, strict=True):
                track.mean, track.covariance = m, c
                if track.state == tracked:
                    track.tracklet_len += 1
                    activated.append(track)
                else:
                    track.tracklet_len = 0
                    refind.append(track)
                track.state = tracked
                track.is_activated = True
                track.frame_id = self.frame_id
                track.score = det.score
                track.cls = det.cls
                track.idx = det.idx

        def multi_predict(self, tracks: list[Any]) -> None:
            """BOTrack.multi_predict, but with this tracker's filter instead of a class-wide one."""
            if not tracks:
                return
            mean = np.asarray([t.mean for t in tracks])
            covariance = np.asarray([t.covariance for t in tracks])
            lost = np.fromiter((t.state != tracked for t in tracks), bool, len(tracks))
            if lost.any():
                mean[lost, 6:8] = 0  # a lost box stops growing (ultralytics)
                mean[lost, 4:6] *= float(self.args.lost_velocity)
            mean, covariance = self.kalman_filter.multi_predict(mean, covariance)
            for t, m, c in zip(tracks, mean, covariance, strict=True):
                t.mean, t.covariance = m, c

        def _pre_first_associate(
            self, strack_pool: list[Any], unconfirmed: list[Any], img: np.ndarray | None, results_high: Any
        ) -> None:
            """BYTETracker's GMC step, warping both pools in one call (the same matrix products per track)."""
            if self.gmc.method is None or img is None:
                return
            try:
                warp = self.gmc.apply(img, results_high.xyxy)
            except Exception as e:  # as ultralytics: an identity warp
                LOGGER.warning(f"GMC failed, falling back to identity: {e}")
                warp = np.eye(2, 3)
            multi_gmc(strack_pool + unconfirmed, warp)

        def _format_output(self) -> np.ndarray:
            """``[t.result for t in activated tracks]`` (x1 y1 x2 y2 id score cls idx), all at once."""
            shown: list[Any] = [t for t in self.tracked_stracks if t.is_activated]
            if not shown or any(t.angle is not None or t.mean is None for t in shown):
                return super()._format_output()
            box = np.array([t.mean[:4] for t in shown])  # STrack.xyxy of BOTrack.tlwh
            box[:, :2] -= box[:, 2:] / 2
            box[:, 2:] += box[:, :2]
            rest = np.array([[t.track_id, t.score, t.cls, t.idx] for t in shown], np.float64)
            return np.concatenate([box, rest], axis=1).astype(np.float32)

        def get_dists(self, tracks: list[Any], detections: list[Any]) -> np.ndarray:
            if not tracks or not detections:
                return np.ones((len(tracks), len(detections)))
            kit = None
            if self.args.with_reid and all(t.smooth_feat is not None for t in tracks):
                kit = matching.embedding_distance(tracks, detections) / 2.0
            return association_cost(
                boxes_xywh(tracks),  # Kalman prediction (after GMC)
                boxes_xywh(detections),
                kit,
                gate=float(self.args.gate),
                kit_gate=float(self.args.kit_gate),
                kit_weight=float(self.args.kit_weight),
                size_weight=float(self.args.size_weight),
            )

    _MOTION_KIT_BOTSORT = MotionKitBoTSORT
    return MotionKitBoTSORT


_MOTION_KIT_BOTSORT: type | None = None
