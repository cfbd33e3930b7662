"""Drawing for every task: one ``Views`` object (the rig's camera images + a BEV panel) and a few
primitives that draw labels or predictions onto it. PIL only, default font.

    views = Views.from_sample(sample, grid, scale=2)
    draw_boxes2d(views, det["boxes"], det["camera"], det["classes"])
    draw_boxes3d(views, obj["boxes"], obj["classes"])
    views.compose(title="scene 3 frame 12").save("out.png")

Coordinates: 2D boxes and masks are in the *stored* image resolution (``views.image_hw``); the
primitives scale them to the drawn size. BEV inputs are ego metres or ``BevGrid`` tensors.

The package: ``style.py`` (colours, font, line primitives), ``views.py`` (``Views``, the composed
picture), ``boxes.py`` (2D/3D boxes, traffic lights) and ``maps.py`` (masks, BEV maps, polylines, depth);
everything is importable from ``hydranet.viz``.
"""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "boxes": ["draw_boxes2d", "draw_boxes3d", "draw_traffic_lights"],
    "canvas": ["Canvas"],
    "maps": ["GROUND_TRUTH_BEV", "depth_color", "depth_rgb",
        "draw_bev_map", "draw_depth", "draw_lane_masks", "draw_mask", "draw_polylines_bev", "draw_sparse_depth"],
    "rerun_log": ["RerunMissing", "SceneRecorder", "decoded_cpu", "require_rerun"],
    "style": ["BEV_COLORS", "BEV_FILL_ALPHA", "CLASS_COLORS", "Color", "DASH", "DEPTH_RANGE", "DRIVABLE_COLOR",
        "EGO_PATH_COLOR", "LANE_ALPHA", "LANE_COLORS", "LIGHT_COLORS", "MIN_IMAGE_SHARE", "REGION_ALPHA",
        "LINE_STYLES", "SERIES_COLORS", "class_color", "lane_color", "line_style"],
    "views": ["EGO_BOX", "LAYOUT", "NUSCENES_LAYOUT", "Views"],
})
