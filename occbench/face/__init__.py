"""Face primitives shared by synth and eval: alignment geometry and templates, landmark finders.

Both ``occbench.synth`` and ``occbench.recognizers`` / ``occbench.bench`` sit above this package;
nothing here imports from them.
"""
