"""The course's lab: the code its chapters and exercises run, on top of the layer library.

Installed with the ``lab`` extra (the ``normlib[lab] @ git+...`` command at the top of the API
reference, which every chapter's set-up cell runs), which brings matplotlib, ipywidgets,
scikit-learn, mnist1d, scikit-image and tqdm. A chapter imports it in one line::

    from normlib.lab import data, models, train, viz

* :mod:`~normlib.lab.data` -- offline data sets (digits, mnist1d, sample images, synthetic ones);
* :mod:`~normlib.lab.train` -- the training loop, evaluation and capture of activations;
* :mod:`~normlib.lab.distributed` -- data-parallel training in worker processes (gloo, CPU);
* :mod:`~normlib.lab.models` -- small MLPs, CNNs, a tiny ResNet, a character LSTM;
* :mod:`~normlib.lab.transformer` -- a tiny Transformer for the post-LN/pre-LN comparison;
* :mod:`~normlib.lab.probes` -- measurements of internal covariate shift and smoothness;
* :mod:`~normlib.lab.invariance` -- the invariance table of Ba et al. (2016);
* :mod:`~normlib.lab.style` -- channel statistics as style, AdaIN on pixels and features;
* chapter experiments, one module per chapter subject: :mod:`~normlib.lab.conditioning`
  (chapter 2), :mod:`~normlib.lab.ics` (3), :mod:`~normlib.lab.bn_training` (4), :mod:`~normlib.lab.inference` (5),
  :mod:`~normlib.lab.norm_practice` (6), :mod:`~normlib.lab.modulation` (7),
  :mod:`~normlib.lab.groupnorm_lab` (8), :mod:`~normlib.lab.speed` (11);
* :mod:`~normlib.lab.viz` -- the book's figures, colours and sliders (a chapter's own figures
  in ``normlib.lab.viz.<subject>``, imported by that chapter as a module);
* :mod:`~normlib.lab.exercises` -- the graded exercises' grader start-up;
* :mod:`~normlib.lab.results` -- numbers one chapter records and another reads (chapter 10).

The layer library (:mod:`normlib`) never imports this package.
"""
