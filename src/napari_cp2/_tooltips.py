"""Every user-visible string of the plugin: labels, tooltips and messages, in one place."""

from __future__ import annotations

__all__ = ["LABELS", "MESSAGES", "TOOLTIPS", "message"]

#: Short widget labels.
LABELS: dict[str, str] = {
    "image": "image",
    "model": "model",
    "model_file": "model file",
    "chan": "channel to segment",
    "chan2": "nucleus channel",
    "channel_axis": "channel axis",
    "do_3d": "3-D (z-stack)",
    "anisotropy": "anisotropy (z step / xy px)",
    "stitch_threshold": "stitch threshold (0 = true 3-D)",
    "diameter": "diameter (px, 0 = auto)",
    "estimate": "estimate diameter",
    "shapes": "diameter shapes",
    "from_shapes": "diameter from shapes",
    "flow_threshold": "flow threshold",
    "cellprob_threshold": "cellprob threshold",
    "augment": "augment (flips)",
    "precision": "network precision",
    "run": "Run",
    "cancel": "Cancel",
    "labels": "labels",
    "delete_mode": "click deletes ROI",
    "click_mode": "click draws a missed cell",
    "batch_source": "images from",
    "batch_folder": "image folder",
    "batch_layer": "time-lapse layer",
    "batch_out": "output folder",
    "measure_image": "intensity image",
    "export_folder": "export folder",
    "draw_shapes": "ROI shapes",
    "add_shapes": "Shapes → new ROIs",
    "merge_a": "merge ROI",
    "merge_b": "with ROI",
    "merge": "Merge",
    "relabel_id": "ROI",
    "relabel": "Relabel to fresh id",
    "undo": "Undo",
    "accept": "Accept image",
    "project": "project folder",
    "open_project": "Open / create project",
    "initial_model": "initial model",
    "epochs": "epochs",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "model_name": "new model name",
    "retrain": "Retrain",
    "suggest_next": "Suggest next image",
    "truth": "ground truth",
    "truth_folder": "or ground-truth folder",
    "thresholds": "IoU thresholds",
    "evaluate": "Evaluate",
}

#: Tooltips, keyed like :data:`LABELS`.
TOOLTIPS: dict[str, str] = {
    "model": "Bundled models, Cellpose models in ~/.cellpose/models, models trained in the open "
    "project, or 'file…' to pick a model file.",
    "model_file": "A cp2 or Cellpose 2/3 model file (used when the model is 'file…').",
    "chan": "0 = grayscale (mean of all channels); 1, 2, 3 … = red, green, blue, … channel.",
    "chan2": "Optional nucleus channel (0 = none).",
    "channel_axis": "Axis of a non-RGB layer that holds channels (-1 = none / RGB layer).",
    "do_3d": "Segment the layer as a z-stack: a (Z, Y, X) layer, or a 4-D layer with a channel "
    "axis. The z axis is the layer's axis labelled 'z', else its first non-channel axis.",
    "anisotropy": "Distance between planes divided by the xy pixel size (2 when planes are twice "
    "as far apart as pixels); taken from the layer's scale when it has one. 3-D mode only.",
    "stitch_threshold": "0: true 3-D (the network runs on YX, ZY and ZX planes, 3-D flows). "
    "Above 0: each plane is segmented in 2-D and masks of consecutive planes whose IoU is at "
    "least this are joined into one cell.",
    "diameter": "Typical cell diameter in pixels; 0 lets the size model estimate it.",
    "estimate": "Estimate the diameter with the model's size model.",
    "from_shapes": "Mean extent of the rectangles or ellipses drawn in the shapes layer.",
    "flow_threshold": "Maximum flow error of a mask (0 disables the check). Changing it "
    "recomputes the masks from the cached flows.",
    "cellprob_threshold": "Pixels with a cell-probability logit above this are foreground. "
    "Changing it recomputes the masks from the cached flows.",
    "augment": "Average the network over flips (slower, a little more accurate).",
    "precision": "auto: bfloat16 where the CPU or GPU computes it natively (several times "
    "faster, the same masks), else float32. fp32: the exact path. bf16: force bfloat16.",
    "run": "Segment the image in a background thread.",
    "cancel": "Stop the running job; the layers already present stay untouched.",
    "delete_mode": "While checked, a click on a ROI in the labels layer deletes it.",
    "click_mode": "While checked, a click on a cell the model missed proposes its ROI from the "
    "model's cached flows and cell probability (cropped by the existing ROIs): Enter accepts "
    "it, Esc discards it. Accepted proposals count as drawn 'by a click'.",
    "batch_source": "A folder of image files, every open image layer, or each frame (first "
    "axis) of a time-lapse layer.",
    "batch_out": "Where the masks, _seg.npy, overlays, ROI files and the summary table go "
    "(empty: beside each image; needed for layers and frames).",
    "batch_run": "Segment every image in a background thread. A rerun skips images whose "
    "outputs are complete and current for the same model and settings.",
    "batch_measure": "Also write one table with a row per ROI of every image.",
    "measure_image": "Image layer whose channels give the mean and integrated intensities.",
    "add_shapes": "Turn every polygon/lasso/ellipse of the shapes layer into a new ROI "
    "(pixels of existing ROIs are kept).",
    "merge": "Merge the second ROI into the first.",
    "relabel": "Give the ROI a new, unused id.",
    "undo": "Undo the last edit made with this widget (napari's own tools: Ctrl+Z).",
    "accept": "Hand the corrected labels to the human-in-the-loop project (saved on disk).",
    "project": "Folder of the human-in-the-loop project (created if empty).",
    "retrain": "Fine-tune the initial model on all accepted images in a background thread.",
    "suggest_next": "Rank the images not accepted yet by how unsure the current model is of "
    "them (flow error of its masks, cell probability near the threshold, disagreement under "
    "a flip, style distance to the accepted images) and select the most uncertain one.",
    "thresholds": "Comma-separated IoU thresholds for the AP table.",
    "truth_folder": "Folder with <image name>_masks.tif or _seg.npy ground truth.",
}

#: Messages shown in napari's notification area; ``str.format`` fields in braces.
MESSAGES: dict[str, str] = {
    "no_image": "cp2: no image layer selected; open an image first.",
    "no_labels": "cp2: no labels layer selected.",
    "empty_labels": "cp2: the labels layer '{name}' has no ROI; nothing to {action}.",
    "bad_ndim": "cp2: layer '{name}' has shape {shape}; cp2 segments 2-D images (H, W), RGB(A) "
    "images (H, W, 3|4) or 3-D layers with a channel axis. Pick a 2-D plane or set the "
    "channel axis, or tick '3-D (z-stack)' to segment a z-stack.",
    "bad_stack": "cp2: layer '{name}' has shape {shape}; '3-D (z-stack)' segments (Z, Y, X) "
    "layers, RGB z-stacks (Z, Y, X, 3|4) or 4-D layers with a channel axis (set the channel "
    "axis).",
    "bad_channel": "cp2: channel {chan} does not exist in layer '{name}', which has "
    "{nchan} channel(s).",
    "empty_channel": "cp2: channel {chan} of layer '{name}' is empty (constant); check the "
    "channel choice.",
    "model_failed": "cp2: could not load model '{model}': {error}",
    "no_model_file": "cp2: choose a model file first.",
    "job_failed": "cp2: {job} failed: {error}",
    "busy": "cp2: a {job} is already running; cancel it or wait.",
    "nothing_to_cancel": "cp2: nothing to cancel.",
    "cancelled": "cp2: {job} cancelled.",
    "no_flows": "cp2: no cached flows for '{name}': segment its image with cp2 first (a "
    "click proposes a cell from the model's flows).",
    "no_proposal": "cp2: no cell found at the click (background, or an existing ROI).",
    "segmented": "cp2: {n} ROIs in '{name}' (diameter {diameter:.1f} px).",
    "edits_kept": "cp2: '{name}' has manual edits; new thresholds were not applied so that "
    "no edit is lost. Run again to make a new labels layer.",
    "no_shapes": "cp2: choose a shapes layer with at least one shape.",
    "no_roi": "cp2: there is no ROI {label} in '{name}'.",
    "nothing_to_undo": "cp2: nothing to undo.",
    "no_project": "cp2: open or create a project in the 'Train' widget first.",
    "accepted": "cp2: accepted '{name}': {n} ROIs ({human} drawn or edited by you).",
    "no_accepted": "cp2: accept at least one image before retraining.",
    "all_accepted": "cp2: every image of the project is accepted.",
    "suggested": "cp2: annotate '{name}' next ({reason}).",
    "project_opened": "cp2: project '{path}' with {n} accepted image(s).",
    "trained": "cp2: trained model '{model}' (final loss {loss:.3f}).",
    "shape_mismatch": "cp2: '{a}' has shape {sa} but '{b}' has shape {sb}.",
    "no_truth": "cp2: choose a ground-truth labels layer or folder.",
    "truth_missing": "cp2: no ground truth for '{name}' in {folder}.",
    "bad_thresholds": "cp2: thresholds must be numbers in (0, 1], e.g. '0.5, 0.75, 0.9'.",
    "no_shapes_diameter": "cp2: draw rectangles or ellipses around a few cells in a shapes "
    "layer first.",
}


def message(key: str, **fields) -> str:
    """Return the message ``key`` with its fields filled in.

    Examples
    --------
    >>> message("no_roi", label=3, name="masks")
    "cp2: there is no ROI 3 in 'masks'."
    """
    return MESSAGES[key].format(**fields)


def labelled(widget, key: str):
    """Attach the label and tooltip of ``key`` to ``widget`` and return it."""
    widget.label = LABELS.get(key, key)
    widget.tooltip = TOOLTIPS.get(key)
    return widget
