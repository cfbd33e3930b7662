"""Constants and the tiny model config shared by the deploy tests (a unique module name, not conftest)."""

from hydranet.model import ModelConfig

TASKS = {
    "detection2d": {"score_threshold": 0.0, "max_detections": 12},
    "traffic_light": {"score_threshold": 0.0, "max_detections": 6},
    "drivable": {},
    "lanes": {},
    "depth": {},
    "bev_semantic": {},
    "objects3d": {"score_threshold": 0.0, "max_detections": 10},
}
CAMERA_TASKS = ("detection2d", "traffic_light", "drivable", "lanes", "depth")


def tiny_config() -> ModelConfig:
    return ModelConfig.preset(
        "tiny", setup={"image_size": (64, 128),
                       "grid": {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}},
        trunk={"name": "regnet_tiny"}, neck={"channels": 16, "min_level": 2},
        fusion={"channels": 16, "encoder_blocks": 1}, bev_channels=16,
        tasks=TASKS)
