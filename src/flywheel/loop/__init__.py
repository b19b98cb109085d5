"""The loop: the steps of one turn of the flywheel, KFP-free, and what drives them.

- steps: one function per pipeline step (export_labels ... select_for_labelling); the
  KFP components in components/ are one-line wrappers around these
- timings: how long each step of each turn took (the loop-latency breakdown)
- demo: `flywheel demo`, N unattended turns with the demo annotator, the report and plot
- experiment: active learning vs random sampling on the demo collection
"""
