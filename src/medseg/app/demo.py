"""``medseg demo RUN_DIR|FILE.onnx``: a Gradio page to upload an image or a NIfTI volume, see the predicted
contours (a slice slider for volumes), read each class's area and download the mask.

Needs the optional extra ``demo`` (``pip install "medseg[demo]"``). Gradio's usage analytics are switched
off before it is imported; the default theme uses local fonts, so the page works without a network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medseg.app.session import DemoSession, Segmentation, area_markdown

#: File types the upload box offers (``.gz`` for ``.nii.gz``).
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".gz"]
INSTALL_HINT = 'medseg demo needs the optional extra "demo": pip install "medseg[demo]" (in a clone: pip install -e ".[demo]")'


def gradio_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gradio") is not None


def build_app(session: DemoSession) -> Any:
    """The Gradio ``Blocks`` of ``session`` (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_upload(file: str | None) -> tuple[Any, ...]:
        if not file:
            return None, None, "", None, gr.update(visible=False)
        try:
            seg = session.segment(Path(file))
        except Exception as err:  # one line on the page, as the CLI does
            raise gr.Error(f"{Path(file).name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        middle = seg.slices // 2
        slider = gr.update(visible=seg.slices > 1, minimum=1, maximum=max(2, seg.slices), value=middle + 1, step=1)
        return (seg, session.overlay(seg, middle), area_markdown(seg, session.class_names, middle),
                str(seg.mask_path), slider)

    def on_slice(seg: Segmentation | None, number: float) -> tuple[Any, str]:
        if seg is None:
            return None, ""
        index = int(number) - 1
        return session.overlay(seg, index), area_markdown(seg, session.class_names, index)

    with gr.Blocks(title="medseg demo", analytics_enabled=False) as app:
        gr.Markdown(f"## medseg demo\n{session.describe()}.  \nResearch use only: **not for clinical use**.")
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (PNG/JPG) or NIfTI volume (.nii.gz)", file_types=UPLOAD_TYPES,
                                 type="filepath", elem_id="upload")
                slider = gr.Slider(label="slice", minimum=1, maximum=2, step=1, value=1, visible=False,
                                   elem_id="slice")
                areas = gr.Markdown(elem_id="areas")
                mask = gr.File(label="Predicted mask (PNG / NIfTI)", interactive=False, elem_id="mask")
            with gr.Column(scale=2):
                overlay = gr.Image(label="image | prediction", type="numpy", interactive=False, elem_id="overlay",
                                   format="png")
        upload.upload(on_upload, [upload], [state, overlay, areas, mask, slider])
        slider.release(on_slice, [state, slider], [overlay, areas])
    return app


def serve(session: DemoSession, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve ``session``'s page on ``host:port`` (``block=False`` returns the running app; ``app.close()`` stops it)."""
    app = build_app(session)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=True, show_error=True,
               inbrowser=False)
    return app
