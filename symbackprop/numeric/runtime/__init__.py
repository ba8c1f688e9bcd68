"""The helpers every generated gradients module runs on — real modules, tested on their own,
whose definitions the printers copy into each module they write (``numeric.embed`` copies
those a module uses, with what they use in turn, into one flat module that needs numpy
alone). One job each:

* ``calls``: a call of ``loss_and_grads`` — arguments checked, a program run, the result
  shaped (per sample, or the batch's sum or mean);
* ``functions``: the activations and losses, in forms that never overflow;
* ``windows``: products, a small convolution as one matrix, the windows of a batch held
  last and their adjoints;
* ``chunks``: the per-layer program on a large batch, a chunk at a time, on threads.

They import numpy, the standard library and one another (calls → functions, chunks), never
the rest of symbackprop, and no two define the same name: a generated module holds them
side by side.
"""
