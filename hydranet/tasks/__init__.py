"""Tasks: one file each, registered in ``TASKS`` (``@register_task``). The registry loads every module of this
package on first lookup, so adding a task is dropping a file here plus one config line; tasks living in other
distributions register through the ``hydranet.tasks`` entry-point group
(``[project.entry-points."hydranet.tasks"]``)."""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "base": ["HeadContext", "TASKS", "Task", "TaskOptions", "create_task", "grid_raster_tasks", "register_task"],
    "heads": ["BevHead", "BevHeadOptions", "CameraHead", "CameraHeadOptions", "CameraTask", "ConvHead",
        "DenseHeadOptions", "IMAGE_KEY", "to_label_resolution"],
    "heatmaps": ["draw_gaussian", "gaussian_radius", "heatmap_focal_loss", "topk_peaks"],
    "losses": ["binary_focal_loss", "giou_loss", "present_index", "soft_dice_loss"],
})
