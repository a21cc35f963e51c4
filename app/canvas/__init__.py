"""The image canvas: zoom/pan view, display contrast, and the instance overlay.

Names other parts of the app (editing tools, undo commands) rely on -- keep them stable:

``window.canvas`` : :class:`ImageCanvas` (a QGraphicsView)
    ``canvas.set_image(array, contrast=None, fit=True)``  show an image as read (any dtype,
                                                           or a lazily read ``LargeImage``)
    ``canvas.set_instances(instances, selected=set())``    full overlay update
    ``canvas.overlay``                                     :class:`Overlay`:
        ``overlay.labels``  (H, W) int32, instance index + 1 per pixel (0 = background); a tool
                            may write a window of it (``labels[y0:y1, x0:x1] = values``; on
                            tiled large images that is all it takes, kept as patches), then call
        ``overlay.update_region(x0, y0, x1, y1)``  re-render only that rectangle (cheap: a brush
                            dab on a 2048x2048 image re-renders in well under 16 ms)
        ``overlay.instance_at(x, y)``  instance index under an image pixel, or -1
        ``overlay.set_style(opacity=..., fill=..., contours=..., colour_by=..., hidden_classes=...)``
    ``canvas.tiled``  True for images of at least ``tile_index.TILED_MIN_PIXELS`` (4096 x 4096):
        drawn per tile from pyramid levels, ``canvas.overlay`` is then a
        :class:`tiled.TiledOverlay` (the same API without full-size buffers)
    ``canvas.set_tool(tool or None)``  while set, the canvas calls
        ``tool.mouse_press(x, y, event)``, ``tool.mouse_move(x, y, event)``,
        ``tool.mouse_release(x, y, event)`` with x, y float IMAGE pixel coordinates; a tool
        returns True when it consumed the event, else the canvas pans/zooms as usual.
    ``canvas.fit_to_window()``, ``canvas.zoom_1to1()``, ``canvas.zoom_by(f)``, ``canvas.zoom``
    signals ``cursor_moved(x, y, value_text, instance_index)``, ``instance_clicked(index)``,
    ``zoom_changed(scale)``
``window.undo_stack`` : QUndoStack the editing commands are pushed onto
``window.current_instances()`` : the Instances shown for the current image (edited or predicted)
``window.set_current_instances(instances, edited=True)`` : replace them (marks the image edited)
"""
from .contrast import Contrast, apply_contrast, auto_contrast
from .overlay import Overlay, OverlayStyle
from .view import ImageCanvas

__all__ = ["Contrast", "ImageCanvas", "Overlay", "OverlayStyle", "apply_contrast",
           "auto_contrast"]
