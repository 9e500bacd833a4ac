"""The web demo (``medseg demo``, optional extra ``demo``): a thin Gradio layer over :class:`~medseg.Predictor`."""
