"""``python -m bridge.align RECIPE.yaml``: the whole loop in one command (docs/ALIGN.md).

A recipe (:mod:`bridge.align.recipe`) names the reference side and the port side (framework, interpreter,
a builder or a command line), the conversion, the one-sample data, what to record and the stages to run;
:mod:`bridge.align.plan` turns it into commands, :mod:`bridge.align.execute` runs them, each side in its own
process and interpreter (this package never imports detectron2 or mmdet), and the report stage writes
``out/report.html``. :mod:`bridge.align.side` is what the two sides' ``record_model`` entry points share.
"""
